//! What the outside-in tests of the C ABI share: the outside programs they need (`cc`,
//! `valgrind`, `python3`: missing ones skip the test, or fail it when `CI` is set), the built
//! library and `pierce` binary (built by a nested `cargo build` into this test's own target
//! directory, so neither can be stale), and running children with a time limit.
#![allow(dead_code)] // each test file uses what it needs
#![allow(clippy::print_stderr, clippy::print_stdout)] // SKIPPED lines and children's output

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// The tests that run several processes (or valgrind): one at a time, on a 2-core machine.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// True if every program in `tools` answers `--version`. When one is missing: with `CI` set
/// the test fails, naming it; otherwise it prints `SKIPPED` and the test returns early.
pub(crate) fn have(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI is set and these programs are missing: {missing:?} (.ci/run installs \
         them: apt-get install gcc libc6-dev valgrind python3)"
    );
    println!("SKIPPED {test}: {missing:?} not installed");
    false
}

/// The crate's directory (`runtime-mio/ffi`).
pub(crate) fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The profile directory this test executable was built into (`<target>/debug` for
/// `<target>/debug/deps/c_programs-HASH`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// What the nested build produced: the directory holding `libpierce.so` and `libpierce.a`,
/// and the `pierce` binary.
pub(crate) struct Built {
    pub(crate) lib_dir: PathBuf,
    pub(crate) pierce: PathBuf,
}

/// Builds `libpierce` (cdylib and staticlib) and the `pierce` command into the target
/// directory and profile of this test, once per test process: `cargo test -p pierce-ffi`
/// alone does not build another package's binary, and another crate's test cannot name it
/// with `env!("CARGO_BIN_EXE_pierce")`. Cargo releases its build lock before it runs tests,
/// so this nested build does not wait for the outer one; when everything is fresh it only
/// checks timestamps.
pub(crate) fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile = profile_dir();
        let target = profile.parent().expect("<target>/<profile>").to_path_buf();
        let release = profile.file_name().is_some_and(|n| n == "release");
        let workspace = crate_dir().join("../..");
        for args in [
            &["-p", "pierce-ffi", "--lib"][..],
            &["-p", "pierce-mio", "--bin", "pierce"][..],
        ] {
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .current_dir(&workspace)
                .args(["build", "--locked", "--quiet"])
                .args(args)
                .arg("--target-dir")
                .arg(&target);
            if release {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build");
            assert!(status.success(), "cargo build {args:?} failed: {status}");
        }
        let built = Built {
            lib_dir: profile.clone(),
            pierce: profile.join("pierce"),
        };
        for f in [
            built.lib_dir.join("libpierce.so"),
            built.lib_dir.join("libpierce.a"),
            built.pierce.clone(),
        ] {
            assert!(f.is_file(), "cargo build did not produce {}", f.display());
        }
        built
    })
}

/// How a C program links the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Link {
    /// `-lpierce` (libpierce.so), with an rpath so the program runs without
    /// `LD_LIBRARY_PATH`.
    Shared,
    /// libpierce.a, with the system libraries the Rust standard library needs.
    Static,
}

/// Compiles `examples/<name>.c` against the shared library (see [`compile_path`]).
pub(crate) fn compile(name: &str) -> PathBuf {
    compile_linked(name, Link::Shared)
}

/// Compiles `examples/<name>.c`, once per test process and way of linking: the tests that
/// run it run in parallel threads, and must not rewrite an executable another runs.
pub(crate) fn compile_linked(name: &str, link: Link) -> PathBuf {
    static DONE: Mutex<BTreeMap<(String, Link), PathBuf>> = Mutex::new(BTreeMap::new());
    let mut done = DONE.lock().unwrap_or_else(PoisonError::into_inner);
    done.entry((name.to_owned(), link))
        .or_insert_with(|| {
            let src = crate_dir().join("examples").join(format!("{name}.c"));
            compile_path(name, &src, link)
        })
        .clone()
}

/// Compiles C source text (written next to the executable as `<name>.c`).
pub(crate) fn compile_source(name: &str, source: &str) -> PathBuf {
    let src = out_dir().join(format!("{name}.c"));
    std::fs::write(&src, source).expect("write the C source");
    compile_path(name, &src, Link::Shared)
}

/// Where the compiled C programs go: `<target>/<profile>/pierce-ffi-c/`.
fn out_dir() -> PathBuf {
    let dir = built().lib_dir.join("pierce-ffi-c");
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

/// Compiles `src` with `cc -std=c11 -Wall -Wextra -Werror` against the committed header and
/// the built library; returns the executable.
fn compile_path(name: &str, src: &Path, link: Link) -> PathBuf {
    let built = built();
    let exe = out_dir().join(match link {
        Link::Shared => name.to_owned(),
        Link::Static => format!("{name}-static"),
    });
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-I"])
        .arg(crate_dir().join("include"))
        .arg(src)
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Shared => cc
            .arg("-L")
            .arg(&built.lib_dir)
            .arg(format!("-Wl,-rpath,{}", built.lib_dir.display()))
            .arg("-lpierce"),
        Link::Static => {
            cc.arg(built.lib_dir.join("libpierce.a"))
                .args(["-lpthread", "-ldl", "-lm"])
        }
    };
    println!("{cc:?}");
    let out = cc.output().expect("run cc");
    assert!(
        out.status.success(),
        "cc {} failed ({}):\n{}{}",
        src.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// How a child ended, with everything it printed.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// Its last line on stdout (the programs here end with a JSON summary).
    pub(crate) fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    /// Everything, for an assertion message.
    pub(crate) fn show(&self, what: &str) -> String {
        format!(
            "{what}: {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Starts `cmd` with piped stdout and stderr.
pub(crate) fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Waits for `child`, reading its output; kills it and fails after `limit`.
pub(crate) fn finish(mut child: Child, limit: Duration) -> Finished {
    let started = Instant::now();
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let stdout = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (stdout.join(), stderr.join());
            panic!(
                "a child ran longer than {limit:?}\n--- stdout\n{}--- stderr\n{}",
                o.unwrap_or_default(),
                e.unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `valgrind` with the settings every C run here uses: memcheck, exit status 99 on any memory
/// error and on a leak of any kind, "still reachable" included (see [`VALGRIND_WHY`]), no
/// suppressions.
pub(crate) fn valgrind() -> Command {
    let mut v = Command::new("valgrind");
    v.args([
        "--leak-check=full",
        "--show-leak-kinds=all",
        "--errors-for-leak-kinds=all",
        "--error-exitcode=99",
        "--track-origins=yes",
    ]);
    v
}

/// Why every leak kind fails a run: a handle the program forgot to free is not "definitely
/// lost" but "still reachable", because the library's registry of live handles keeps its
/// address (the `forgotten_free_fails_the_valgrind_check` test shows it). A correct program
/// leaves nothing: the registry gives its map's node back when the last handle is freed.
pub(crate) const VALGRIND_WHY: &str =
    "every leak kind fails, still reachable included; no suppressions";

/// The `ERROR SUMMARY` and `LEAK SUMMARY` lines of a valgrind run's stderr, for the report.
pub(crate) fn valgrind_summary(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| {
            [
                "ERROR SUMMARY",
                "definitely lost",
                "indirectly lost",
                "possibly lost",
                "still reachable",
                "in use at exit",
                "All heap blocks were freed",
                "suppressed:",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `"key":"value"` in a flat JSON line (values here never contain quotes).
pub(crate) fn string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_owned())
}
