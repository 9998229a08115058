//! Chain verification.
