//! A `wasi:http/incoming-handler` component: answers every request with a greeting
//! naming the method and path (and echoes the body of a POST). `/slow?ms=N` waits N
//! milliseconds before answering (to test graceful drain).
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct HttpHello;

wasi::http::proxy::export!(HttpHello);

impl wasi::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = format!("{:?}", request.method());
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let mut body_in = Vec::new();
        if let Ok(body) = request.consume() {
            if let Ok(stream) = body.stream() {
                while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                    if chunk.is_empty() {
                        break;
                    }
                    body_in.extend_from_slice(&chunk);
                }
            }
        }
        if let Some(ms) = path.strip_prefix("/slow?ms=").and_then(|v| v.parse::<u64>().ok()) {
            wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        let mut text = format!("hello from wasi:http ({method} {path})\n");
        if !body_in.is_empty() {
            text.push_str(&String::from_utf8_lossy(&body_in));
        }

        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain".to_vec(),
        )])
        .unwrap();
        let response = OutgoingResponse::new(headers);
        response.set_status_code(200).unwrap();
        let body = response.body().unwrap();
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().unwrap();
        out.blocking_write_and_flush(text.as_bytes()).unwrap();
        drop(out);
        OutgoingBody::finish(body, None).unwrap();
    }
}
