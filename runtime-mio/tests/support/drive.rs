//! The drive example (`core/examples/drive.rs`: pierce-core driven over `std::net` by hand)
//! as a program the tests can run.

/// `core/examples/drive.rs` (the core driven over `std::net` by hand, default configuration),
/// built once by cargo for these tests.
pub(crate) fn example() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut cargo = std::process::Command::new(env!("CARGO"));
            cargo.args(["build", "-q", "-p", "pierce-core", "--example", "drive"]);
            let profile = if cfg!(debug_assertions) {
                "debug"
            } else {
                cargo.arg("--release");
                "release"
            };
            let status = cargo.status().expect("run cargo");
            assert!(status.success(), "building the drive example failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
            format!("{target}/{profile}/examples/drive")
        })
        .clone()
}
