//! Sets the `privileged` cfg where the privileged end-to-end tests (FUSE,
//! network namespaces, loop devices) are to run: under CI (`CI` set), or
//! when built by root. Elsewhere those tests are ignored with their reason,
//! so a skip shows in the test summary and never passes as a test.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(privileged)");
    println!("cargo::rerun-if-env-changed=CI");
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false);
    if root || std::env::var_os("CI").is_some() {
        println!("cargo::rustc-cfg=privileged");
    }
}
