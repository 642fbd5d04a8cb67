//! The committed C header (`include/pierce.h`) must be what cbindgen generates from the crate
//! now: a signature changed without regenerating it fails here (and in CI).
//! `PIERCE_BLESS=1 cargo test -p pierce-ffi --test header` rewrites it.
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn committed_header_matches_the_generated_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .expect("runtime-mio/ffi/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = dir.join("include/pierce.h");
    if std::env::var_os("PIERCE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/pierce.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "runtime-mio/ffi/include/pierce.h is out of date (first difference at line {}).\n\
             Regenerate it with:\n    PIERCE_BLESS=1 cargo test -p pierce-ffi --test header\n\
             committed: {:?}\ngenerated: {:?}",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            generated.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
