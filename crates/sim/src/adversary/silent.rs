//! A silent replica: sends nothing at all (as a primary, a silent primary). Applied in
//! [`super::World::rewrite`], which drops everything it would send.
