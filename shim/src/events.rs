//! Publishing task events to containerd (`/tasks/create`, `/tasks/exit`, ...).
//!
//! `Publisher::publish` never blocks and never fails the caller: events go through one
//! ordered queue to a task that sends them over containerd's ttrpc Events service
//! (`TTRPC_ADDRESS`), retrying on transient errors and reconnecting after containerd restarts.
//! One queue means events reach containerd in the order they were published.
//!
//! Wire format: `containerd.services.events.ttrpc.v1.Events/Forward` with an `Envelope`
//! {timestamp, namespace, topic, event}, where `event` is an `Any` whose type URL is the
//! message's full protobuf name (`containerd.events.TaskExit`): containerd's `typeurl`
//! registry knows the events under those bare names.

use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::{topics, ttrpc};
use tokio::sync::{mpsc, watch};

/// Attempts per event before it is dropped (with an error in the log). With the backoff below
/// this rides out roughly 15 s of containerd being away (a restart).
const MAX_ATTEMPTS: u32 = 10;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Per-request timeout, so a wedged containerd cannot stall the queue forever.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A task event and the topic containerd files it under: the pair is fixed here once, so no
/// caller can send a message under another message's topic.
pub trait TaskEvent: MessageDyn + Sized {
    const TOPIC: &'static str;
}

macro_rules! task_event_topics {
    ($($message:ident => $topic:ident,)*) => {
        $(impl TaskEvent for ev::$message {
            const TOPIC: &'static str = topics::$topic;
        })*
    };
}

task_event_topics! {
    TaskCreate => TASK_CREATE_EVENT_TOPIC,
    TaskStart => TASK_START_EVENT_TOPIC,
    TaskExecAdded => TASK_EXEC_ADDED_EVENT_TOPIC,
    TaskExecStarted => TASK_EXEC_STARTED_EVENT_TOPIC,
    TaskPaused => TASK_PAUSED_EVENT_TOPIC,
    TaskResumed => TASK_RESUMED_EVENT_TOPIC,
    TaskOOM => TASK_OOM_EVENT_TOPIC,
    TaskExit => TASK_EXIT_EVENT_TOPIC,
    TaskDelete => TASK_DELETE_EVENT_TOPIC,
}

#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    queue: mpsc::UnboundedSender<Envelope>,
    /// Events queued and not yet sent or given up on.
    pending: watch::Sender<usize>,
}

/// Where the queue drains to.
enum Sink {
    Remote {
        address: String,
    },
    #[cfg(test)]
    Memory(Arc<Mutex<Vec<Envelope>>>),
}

impl Publisher {
    /// `ttrpc_address`: containerd's ttrpc socket; `namespace`: the shim's namespace.
    /// Must be called inside the tokio runtime (it spawns the sending task). Connects lazily.
    pub fn new(ttrpc_address: String, namespace: String) -> Publisher {
        let address = if ttrpc_address.contains("://") {
            ttrpc_address
        } else {
            format!("unix://{ttrpc_address}")
        };
        Publisher::with_sink(namespace, Sink::Remote { address })
    }

    /// A publisher that keeps the envelopes in memory instead of sending them: the Task
    /// service's unit tests read the events it published from there.
    #[cfg(test)]
    pub fn in_memory(namespace: String) -> (Publisher, Arc<Mutex<Vec<Envelope>>>) {
        let store = Arc::new(Mutex::new(Vec::new()));
        (
            Publisher::with_sink(namespace, Sink::Memory(store.clone())),
            store,
        )
    }

    fn with_sink(namespace: String, sink: Sink) -> Publisher {
        let (queue, rx) = mpsc::unbounded_channel();
        let (pending, _) = watch::channel(0usize);
        let inner = Arc::new(Inner {
            namespace,
            queue,
            pending,
        });
        tokio::spawn(drain(rx, sink, Arc::downgrade(&inner)));
        Publisher { inner }
    }

    /// Queues `event` under `topic` (e.g. `/tasks/exit`), stamped with the current time.
    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let envelope = match envelope(&self.inner.namespace, topic, event.as_ref()) {
            Ok(e) => e,
            Err(e) => {
                log::error!(
                    "event {topic}: cannot encode {}: {e}",
                    event.descriptor_dyn().full_name()
                );
                return;
            }
        };
        log::debug!("publish {topic} {}", event.descriptor_dyn().full_name());
        self.inner.pending.send_modify(|n| *n += 1);
        if self.inner.queue.send(envelope).is_err() {
            // The sending task is gone (runtime shutting down).
            self.inner.pending.send_modify(|n| *n -= 1);
            log::error!("event {topic} dropped: publisher stopped");
        }
    }

    /// Queues a task event under its own topic.
    pub fn task_event<E: TaskEvent>(&self, event: E) {
        self.publish(E::TOPIC, Box::new(event));
    }

    /// Waits until every queued event has been sent (or given up on); used before exit.
    pub async fn flush(&self) {
        let mut rx = self.inner.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

fn envelope(
    namespace: &str,
    topic: &str,
    event: &dyn MessageDyn,
) -> Result<Envelope, containerd_shim_protos::protobuf::Error> {
    let mut value = Vec::new();
    event.write_to_vec_dyn(&mut value)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Envelope {
        timestamp: Some(Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
            ..Default::default()
        })
        .into(),
        namespace: namespace.to_string(),
        topic: topic.to_string(),
        event: Some(Any {
            type_url: event.descriptor_dyn().full_name().to_string(),
            value,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
}

/// The single task that empties the queue, in order. Ends when every `Publisher` is dropped.
async fn drain(
    mut rx: mpsc::UnboundedReceiver<Envelope>,
    sink: Sink,
    inner: std::sync::Weak<Inner>,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(envelope) = rx.recv().await {
        match &sink {
            #[cfg(test)]
            Sink::Memory(store) => store.lock().unwrap().push(envelope),
            Sink::Remote { address } => send(address, &mut client, envelope).await,
        }
        if let Some(inner) = inner.upgrade() {
            inner.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

async fn send(address: &str, client: &mut Option<EventsClient>, envelope: Envelope) {
    let topic = envelope.topic.clone();
    let req = ForwardRequest {
        envelope: Some(envelope).into(),
        ..Default::default()
    };
    let mut backoff = BACKOFF_START;
    for attempt in 1..=MAX_ATTEMPTS {
        let result = match client {
            Some(c) => forward(c, &req).await,
            None => match Client::connect(address).await {
                Ok(c) => {
                    let c = client.insert(EventsClient::new(c));
                    forward(c, &req).await
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => return,
            Err(ttrpc::Error::RpcStatus(s)) if s.code() != ttrpc::Code::UNAVAILABLE => {
                // containerd got it and said no: retrying won't change its mind.
                log::error!("event {topic} rejected by containerd: {}", s.message());
                return;
            }
            Err(e) => {
                *client = None;
                if attempt == MAX_ATTEMPTS {
                    log::error!("event {topic} dropped after {attempt} attempts to reach containerd at {address}: {e}");
                    return;
                }
                log::warn!(
                    "event {topic}: containerd at {address} not reachable (attempt {attempt}): {e}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn forward(client: &EventsClient, req: &ForwardRequest) -> ttrpc::Result<()> {
    let ctx = ttrpc::context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
    client.forward(ctx, req).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use containerd_shim_protos::api::Empty;
    use containerd_shim_protos::events::task::{TaskCreate, TaskExit};
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::shim_async::{create_events, Events};
    use ttrpc::r#async::{Server, TtrpcContext};

    #[derive(Clone, Default)]
    struct FakeContainerd {
        got: Arc<Mutex<Vec<Envelope>>>,
    }

    #[async_trait]
    impl Events for FakeContainerd {
        async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            self.got.lock().unwrap().push(req.envelope.unwrap());
            Ok(Empty::new())
        }
    }

    fn serve(path: &std::path::Path, fake: FakeContainerd) -> Server {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        Server::new()
            .add_listener(listener.try_into().unwrap())
            .register_service(create_events(Arc::new(fake)))
    }

    fn exit(id: &str, status: u32) -> Box<TaskExit> {
        Box::new(TaskExit {
            container_id: id.into(),
            id: id.into(),
            exit_status: status,
            ..Default::default()
        })
    }

    #[test]
    fn envelope_carries_full_proto_name() {
        let e = envelope("ns", "/tasks/exit", exit("c1", 3).as_ref()).unwrap();
        assert_eq!(e.namespace, "ns");
        assert_eq!(e.topic, "/tasks/exit");
        let any = e.event.unwrap();
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let ev = TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(ev.exit_status, 3);
        assert!(e.timestamp.seconds > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_in_order_and_survives_containerd_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c.sock.ttrpc");
        let fake = FakeContainerd::default();

        // containerd is not up yet: events wait in the queue and are retried.
        let publisher = Publisher::new(sock.display().to_string(), "default".into());
        publisher.publish(
            "/tasks/create",
            Box::new(TaskCreate {
                container_id: "c1".into(),
                ..Default::default()
            }),
        );
        publisher.publish("/tasks/exit", exit("c1", 0));
        tokio::time::sleep(Duration::from_millis(250)).await;

        let mut server = serve(&sock, fake.clone());
        server.start().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), publisher.flush())
            .await
            .unwrap();
        {
            let got = fake.got.lock().unwrap();
            let topics: Vec<_> = got.iter().map(|e| e.topic.as_str()).collect();
            assert_eq!(topics, ["/tasks/create", "/tasks/exit"]);
            assert_eq!(got[0].event.type_url, "containerd.events.TaskCreate");
            assert_eq!(got[0].namespace, "default");
        }

        // containerd restarts: the publisher reconnects.
        server.shutdown().await.unwrap();
        drop(server);
        let mut server = serve(&sock, fake.clone());
        server.start().await.unwrap();
        for i in 1..=5 {
            publisher.publish("/tasks/exit", exit(&format!("c{i}"), i));
        }
        tokio::time::timeout(Duration::from_secs(10), publisher.flush())
            .await
            .unwrap();
        // The lock is released before the next await.
        let statuses: Vec<u32> = fake.got.lock().unwrap()[2..]
            .iter()
            .map(|e| {
                TaskExit::parse_from_bytes(&e.event.value)
                    .unwrap()
                    .exit_status
            })
            .collect();
        assert_eq!(statuses, [1, 2, 3, 4, 5]);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn in_memory_sink_and_flush() {
        let (p, store) = Publisher::in_memory("k8s.io".into());
        p.publish("/tasks/exit", exit("a", 1));
        p.flush().await;
        assert_eq!(store.lock().unwrap().len(), 1);
        // flush with nothing pending returns at once
        p.flush().await;
    }
}
