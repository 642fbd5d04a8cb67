//! Programs nobody on the project wrote, found (or built) for the interop tests: a test
//! that needs one fails in CI when it is missing (`.ci/run` installs it) and prints
//! `SKIPPED` elsewhere. Shared by `stun_independent.rs` and the NAT lab.
#![allow(dead_code)] // each test binary uses what it needs

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Where `tool` is (PATH, or /usr/sbin where Debian puts `stund`); `None` (after saying so)
/// when it is missing outside CI; panics in CI.
pub(crate) fn find(tool: &str, package: &str) -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let found = on_path.or_else(|| {
        ["/usr/sbin", "/usr/bin"]
            .iter()
            .map(|d| PathBuf::from(d).join(tool))
            .find(|p| p.exists())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing in CI: .ci/run must install {package}"
        );
        eprintln!("SKIPPED: {tool} not installed (apt-get install {package})");
    }
    found
}

/// Where Debian's `golang-github-ccding-go-stun-dev` puts the source (GOPATH layout).
const GO_STUN_GOPATH: &str = "/usr/share/gocode";

/// go-stun's command, built once from Debian's source with Debian's Go (no network: GOPATH
/// mode, the one package it needs is in the same GOPATH); `None` (after saying so) when Go or
/// the source is missing outside CI; panics in CI.
pub(crate) fn go_stun() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let go = find("go", "golang-go")?;
            let src = PathBuf::from(GO_STUN_GOPATH).join("src/github.com/ccding/go-stun");
            if !src.exists() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "go-stun is missing in CI: .ci/run must install \
                     golang-github-ccding-go-stun-dev"
                );
                eprintln!("SKIPPED: apt-get install golang-github-ccding-go-stun-dev");
                return None;
            }
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-stun");
            let _ = std::fs::create_dir_all(&dir);
            let out = dir.join("go-stun");
            let status = Command::new(go)
                .args(["build", "-o"])
                .arg(&out)
                .arg("github.com/ccding/go-stun")
                .env("GO111MODULE", "off")
                .env("GOPATH", GO_STUN_GOPATH)
                .env("GOCACHE", dir.join("cache"))
                .env("HOME", &dir)
                .status()
                .unwrap_or_else(|e| panic!("cannot run go: {e}"));
            assert!(status.success(), "building go-stun failed");
            Some(out)
        })
        .clone()
}
