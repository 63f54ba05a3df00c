//! Local fake provider servers for tests and the dev stack.
