//! Publishing task events to containerd (`/tasks/create`, `/tasks/exit`, ...).
//!
//! `Publisher::publish` never blocks and never fails the caller: events go through one
//! ordered queue to a task that sends them over containerd's ttrpc Events service
//! (`TTRPC_ADDRESS`), retrying on transient errors and reconnecting after containerd restarts.
//! One queue means events reach containerd in the order they were published.

use containerd_shim_protos::protobuf::MessageDyn;

#[derive(Clone)]
pub struct Publisher {
    // implementation detail
    _private: (),
}

impl Publisher {
    /// `ttrpc_address`: containerd's ttrpc socket; `namespace`: the shim's namespace.
    pub fn new(ttrpc_address: String, namespace: String) -> Publisher {
        todo!()
    }

    /// Queues `event` under `topic` (e.g. `/tasks/exit`), stamped with the current time.
    pub fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        todo!()
    }

    /// Waits until every queued event has been sent (or given up on); used before exit.
    pub async fn flush(&self) {
        todo!()
    }
}
