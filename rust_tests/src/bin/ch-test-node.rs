//! The `cluster-helper` command line, built inside this test crate so its
//! tests can run it as a child process (`CARGO_BIN_EXE_ch-test-node`).
fn main() -> std::process::ExitCode {
    cluster_helper_node::cli::main()
}
