//! Unit tests of every rule: accepting, each rejecting reason, and the block-time edges.
