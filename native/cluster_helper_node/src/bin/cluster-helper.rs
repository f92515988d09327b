//! `cluster-helper`: see [`cluster_helper_node::cli`].
fn main() -> std::process::ExitCode {
    cluster_helper_node::cli::main()
}
