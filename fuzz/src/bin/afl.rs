//! The fuzz targets under AFL++ (coverage-guided): `dot-fuzz-afl TARGET`
//! reads cases as AFL++ hands them in and runs TARGET on each. Built by
//! `cargo afl build --release -p dot-fuzz --features afl`; bench/fuzz.sh
//! runs it with `cargo afl fuzz`. The counting allocator aborts a case
//! past 256 MiB of live heap, which AFL++ records as a crash.

use dot_fuzz::alloc::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = dot_fuzz::find(&name) else {
        eprintln!("usage: dot-fuzz-afl TARGET (see `dot-fuzz list`)");
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
}
