//! `geocache-jepsen`: the fault-injection harness. Its real content (cluster control, fault proxy,
//! nemeses, workloads, checkers) is the subject of a later issue; this crate only reserves its place
//! in the workspace so the layout of DESIGN.md section 2 holds from the start.

fn main() {
    eprintln!("geocache-jepsen: not implemented yet (see the fault-injection issue)");
    std::process::exit(2);
}
