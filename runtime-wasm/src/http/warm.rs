//! Instances kept between requests (`[wasm.http] instance_reuse` > 1).
//!
//! An instance whose `handle` call returned normally goes back to an idle list with its store
//! and serves a later request, until it has served `instance_reuse` of them; that saves the
//! instantiation and the slot reset (about half of what a small guest costs per request). One
//! that trapped, timed out or failed is dropped, as is one whose table still holds a request's
//! HTTP resources (a body, a request, an outgoing call): they belong to the finished request,
//! and dropping the store ends them where keeping the instance would keep them alive into the
//! next one. The idle list is emptied once
//! the server has been quiet for a while ([`WarmInstances::clear`], from the idle watcher), so an
//! idle server holds no more than a fresh one.

use std::sync::Mutex;

use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::body::{HostIncomingBody, HostOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest,
    HostOutgoingResponse, HostResponseOutparam,
};

use crate::context::CompState;

/// An instance and the store it lives in, with the requests it has served.
pub(crate) struct Warm {
    pub(crate) store: Store<CompState>,
    pub(crate) proxy: Proxy,
    pub(crate) served: u32,
}

pub(crate) struct WarmInstances {
    /// Requests one instance may serve; 1 = never kept.
    reuse: u32,
    idle: Mutex<Vec<Warm>>,
}

impl WarmInstances {
    pub(crate) fn new(reuse: u32) -> WarmInstances {
        WarmInstances {
            reuse,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.reuse > 1
    }

    /// The most recently used idle instance (its pages are the likeliest to be warm).
    pub(crate) fn take(&self) -> Option<Warm> {
        if !self.enabled() {
            return None;
        }
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// An instance whose `handle` returned normally: kept if it may serve more and holds none
    /// of the finished request's HTTP resources, else dropped here.
    pub(crate) fn put_back(&self, mut warm: Warm) {
        warm.served += 1;
        if warm.served >= self.reuse || holds_http_resources(&mut warm.store.data_mut().table) {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(warm);
    }

    /// Drops every idle instance (their stores and pool slots).
    pub(crate) fn clear(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }
}

/// Whether the table still holds a request, response, body or outgoing call: what a guest
/// that finished its request cleanly has given up. (Streams it keeps, such as a cached
/// stdout handle, are its own business and survive as they would in one long run.)
fn holds_http_resources(table: &mut ResourceTable) -> bool {
    table.iter_mut().any(|e| {
        let e: &dyn std::any::Any = e;
        e.is::<HostIncomingRequest>()
            || e.is::<HostResponseOutparam>()
            || e.is::<HostOutgoingResponse>()
            || e.is::<HostOutgoingBody>()
            || e.is::<HostIncomingBody>()
            || e.is::<HostOutgoingRequest>()
            || e.is::<HostIncomingResponse>()
            || e.is::<HostFutureIncomingResponse>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_left_in_the_table_is_seen() {
        let mut table = ResourceTable::new();
        assert!(!holds_http_resources(&mut table));
        table.push(String::from("a guest's own stream")).unwrap();
        assert!(!holds_http_resources(&mut table));
        table
            .push(HostFutureIncomingResponse::Consumed)
            .expect("push");
        assert!(holds_http_resources(&mut table));
    }
}
