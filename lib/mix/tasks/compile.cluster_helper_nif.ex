defmodule Mix.Tasks.Compile.ClusterHelperNif do
  @moduledoc """
  Builds the `cluster_helper_nif` Rust crate and puts the library in `priv/`.

  Owns `priv/native/libcluster_helper_nif.so` and nothing else. It runs
  `cargo build --release -p cluster_helper_nif` in the Cargo workspace at the
  project root (shared target directory `target/`) every time: cargo is
  incremental and decides itself whether anything needs rebuilding. The
  library is copied only when its bytes changed, so an unchanged build leaves
  `priv/` untouched.

  Listed before `:elixir` in `compilers:` of `mix.exs`. No hex package is
  involved: only `cargo` on the `PATH` (or `$CARGO`).
  """

  use Mix.Task.Compiler

  @crate "cluster_helper_nif"
  @lib "lib#{@crate}.so"

  @impl Mix.Task.Compiler
  def run(_args) do
    root = Path.dirname(Mix.Project.project_file())
    cargo = System.get_env("CARGO") || System.find_executable("cargo")

    cond do
      cargo == nil ->
        error("cargo not found: install Rust (https://rustup.rs) to build #{@crate}")

      not File.exists?(Path.join([root, "native", @crate, "Cargo.toml"])) ->
        error("native/#{@crate}/Cargo.toml is missing")

      true ->
        build(cargo, root)
    end
  end

  @impl Mix.Task.Compiler
  def manifests, do: []

  @impl Mix.Task.Compiler
  def clean do
    File.rm(dest(Path.dirname(Mix.Project.project_file())))
    :ok
  end

  defp build(cargo, root) do
    args = ["build", "--release", "-p", @crate]

    case System.cmd(cargo, args, cd: root, stderr_to_stdout: true, into: IO.stream()) do
      {_, 0} ->
        copy(Path.join([target_dir(root), "release", @lib]), dest(root))

      {_, status} ->
        error("cargo build of #{@crate} failed (exit status #{status})")
    end
  end

  defp copy(src, dest) do
    cond do
      not File.exists?(src) ->
        error("cargo succeeded but #{src} does not exist")

      File.exists?(dest) and File.read!(src) == File.read!(dest) ->
        {:noop, []}

      true ->
        File.mkdir_p!(Path.dirname(dest))
        # Write a fresh file and rename it: a running VM may have the old one mapped.
        tmp = dest <> ".tmp"
        File.cp!(src, tmp)
        File.rename!(tmp, dest)
        # A clean clone has no priv/ when Mix links the app's priv into _build.
        Mix.Project.build_structure()
        Mix.shell().info("Copied #{@lib} to #{Path.relative_to_cwd(dest)}")
        {:ok, []}
    end
  end

  defp target_dir(root), do: System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")

  defp dest(root), do: Path.join([root, "priv", "native", @lib])

  defp error(message) do
    Mix.shell().error("compile.cluster_helper_nif: " <> message)

    diagnostic = %Mix.Task.Compiler.Diagnostic{
      compiler_name: "cluster_helper_nif",
      file: Path.join(["native", @crate, "Cargo.toml"]),
      message: message,
      position: nil,
      severity: :error
    }

    {:error, [diagnostic]}
  end
end
