//! medchain's library: the application-local store, the embedded web UI and the HTTP API.
//! The binary (`main.rs`) wires them to the node.

pub mod app;
pub mod http;
pub mod web;
