//! The time the application goes by: the validators' own clock type, so that the HTTP layer,
//! the flows and an embedded cluster share one (a test that moves a manual clock moves the
//! chain's block times and the application's checks together).

pub use node::Clock;
