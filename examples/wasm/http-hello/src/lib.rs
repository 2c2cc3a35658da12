//! A `wasi:http/incoming-handler` component: answers every request with a greeting
//! naming the method and path (and echoes the body of a POST). Other paths, for the tests:
//! - `/slow?ms=N` waits N milliseconds before answering (graceful drain, run-time limit);
//! - `/count` reads the request body as a stream and answers its length (bounded memory);
//! - `/stream?mb=N` answers N MiB of `x` written in 4 KiB chunks;
//! - `/fetch?url=http://HOST:PORT/PATH` makes an outgoing request and answers its status and
//!   body;
//! - `/trap` traps; `/spin` computes forever;
//! - `/served` answers how many requests this instance has served, this one included (1 for a
//!   fresh instance per request; more where the host keeps instances).
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

struct HttpHello;

/// Requests this instance has served.
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

wasi::http::proxy::export!(HttpHello);

fn respond(out: ResponseOutparam, status: u16, text: &[u8]) {
    let headers =
        Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap();
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).unwrap();
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().unwrap();
    for chunk in text.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

/// Reads the whole request body, calling `each` per chunk.
fn read_body(request: &IncomingRequest, mut each: impl FnMut(&[u8])) {
    if let Ok(body) = request.consume() {
        if let Ok(stream) = body.stream() {
            while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                if chunk.is_empty() {
                    break;
                }
                each(&chunk);
            }
        }
    }
}

fn stream_mib(out: ResponseOutparam, mib: u64) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().unwrap();
    // blocking-write-and-flush takes at most 4096 bytes a call.
    let chunk = [b'x'; 4096];
    for _ in 0..mib * 256 {
        stream.blocking_write_and_flush(&chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Get).unwrap();
    req.set_scheme(Some(&Scheme::Http)).unwrap();
    req.set_authority(Some(authority)).unwrap();
    req.set_path_with_query(Some(path)).unwrap();
    let future = wasi::http::outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let resp = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let mut bytes = Vec::new();
    let body = resp.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no body stream")?;
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        if chunk.is_empty() {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, bytes))
}

#[inline(never)]
fn spin(n: u64) -> u64 {
    let mut x = n;
    loop {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        if x == 0 {
            return x;
        }
    }
}

impl wasi::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = format!("{:?}", request.method());
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let query = |prefix: &str| path.strip_prefix(prefix).map(str::to_string);
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if path == "/served" {
            respond(response_out, 200, format!("served {served}\n").as_bytes());
            return;
        }
        if path == "/trap" {
            core::arch::wasm32::unreachable();
        }
        if path == "/spin" {
            let n = spin(path.len() as u64);
            respond(response_out, 200, format!("{n}\n").as_bytes());
            return;
        }
        if path == "/count" {
            let mut n = 0u64;
            read_body(&request, |c| n += c.len() as u64);
            respond(response_out, 200, format!("count {n}\n").as_bytes());
            return;
        }
        if let Some(mib) = query("/stream?mb=").and_then(|v| v.parse::<u64>().ok()) {
            stream_mib(response_out, mib);
            return;
        }
        if let Some(url) = query("/fetch?url=") {
            match fetch(&url) {
                Ok((status, body)) => {
                    let mut text = format!("fetched {status}\n").into_bytes();
                    text.extend_from_slice(&body);
                    respond(response_out, 200, &text);
                }
                Err(e) => respond(response_out, 502, format!("fetch failed: {e}\n").as_bytes()),
            }
            return;
        }
        let mut body_in = Vec::new();
        read_body(&request, |c| body_in.extend_from_slice(c));
        if let Some(ms) = query("/slow?ms=").and_then(|v| v.parse::<u64>().ok()) {
            wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        let mut text = format!("hello from wasi:http ({method} {path})\n");
        if !body_in.is_empty() {
            text.push_str(&String::from_utf8_lossy(&body_in));
        }
        respond(response_out, 200, text.as_bytes());
    }
}
