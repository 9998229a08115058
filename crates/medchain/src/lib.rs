//! medchain's library: the application-local store, the embedded web UI and the HTTP API.
//! The binary (`main.rs`) wires them to the node.

pub mod app;
pub mod http;
pub mod web;

/// The clock the validators go by (`node::Clock`), for the HTTP layer to share with them.
pub use node::Clock;
