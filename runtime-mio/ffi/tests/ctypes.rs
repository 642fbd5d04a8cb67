//! The library from Python's `ctypes` (standard library only): `tests/ctypes_test.py` loads
//! the built `libpierce.so`, compares its struct declarations with what `cc` makes of
//! `pierce.h` (sizes and offsets), checks the ABI version, addresses and error codes, and runs
//! a server and two clients of the sans-IO layer exchanging reliable messages with datagrams
//! carried in memory. It needs `python3` and `cc`: without them the test prints `SKIPPED`, or
//! fails when `CI` is set.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{finish, spawn};

#[test]
fn python_ctypes_drives_the_sans_io_layer_and_gets_every_error_code() {
    if !support::have("ctypes", &["python3", "cc"]) {
        return;
    }
    let built = support::built();
    let dir = support::crate_dir();
    let run = finish(
        spawn(
            Command::new("python3")
                .arg(dir.join("tests/ctypes_test.py"))
                .env("PIERCE_LIB", built.lib_dir.join("libpierce.so"))
                .env("PIERCE_HEADER", dir.join("include/pierce.h"))
                .env("PIERCE_VERSION", env!("CARGO_PKG_VERSION"))
                .env("PIERCE_CC", "cc"),
        ),
        Duration::from_secs(120),
    );
    println!("{}", run.stdout);
    assert!(run.status.success(), "{}", run.show("ctypes_test.py"));
    assert!(
        run.stdout.contains("ctypes: all checks passed"),
        "{}",
        run.show("ctypes_test.py")
    );
}
