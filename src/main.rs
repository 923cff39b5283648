//! The `kbg` command.

fn main() {}
