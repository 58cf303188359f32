//! The `lienthong` command.
fn main() {}
