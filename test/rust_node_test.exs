defmodule ClusterHelper.RustNodeTest do
  # Elixir drives: the `cluster-helper` command line (a Rust Erlang node) is
  # started as a child OS process, joins this test node's cluster, and takes
  # part in ClusterHelper; its standard input changes its roles at run time.
  use ExUnit.Case, async: false

  import ClusterHelper.Test.Cluster, only: [ch: 3, wait_until: 1, wait_until: 2]

  alias ClusterHelper.Test.{App, Cluster}

  @moduletag :multi_node
  @moduletag :rust_node
  @moduletag timeout: 120_000

  setup_all do
    {:ok, bin: build_cli()}
  end

  setup do
    App.restart(pull_interval: 60_000)
    on_exit(fn -> App.restart() end)
  end

  # The binary is built by cargo here (a no-op when fresh), as mix builds the NIF.
  defp build_cli do
    root = Path.expand("..", __DIR__)

    {out, status} =
      System.cmd("cargo", ["build", "-q", "-p", "cluster_helper_node", "--bin", "cluster-helper"],
        cd: root,
        stderr_to_stdout: true
      )

    assert status == 0, "cargo build of cluster-helper failed:\n#{out}"
    target = System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")
    bin = Path.join([target, "debug", "cluster-helper"])
    assert File.exists?(bin)
    bin
  end

  # Starts `cluster-helper node` connected to this node; returns {node, port}.
  defp start_rust(bin, roles) do
    name = :"rs_#{System.unique_integer([:positive])}@127.0.0.1"
    cookie = Atom.to_string(Node.get_cookie())

    args =
      [
        "node",
        "--name",
        Atom.to_string(name),
        "--cookie",
        cookie,
        "--connect",
        Atom.to_string(node()),
        "--pull-interval",
        "60000"
      ] ++ Enum.flat_map(roles, &["--role", &1])

    port =
      Port.open({:spawn_executable, bin}, [
        :binary,
        :exit_status,
        {:line, 4096},
        args: args,
        env: [{~c"RUST_LOG", ~c"warn"}]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    on_exit(fn -> kill9(os_pid) end)
    assert_receive {^port, {:data, {:eol, "node " <> _}}}, 30_000
    {name, port, os_pid}
  end

  defp kill9(os_pid),
    do: System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)

  defp command(port, line), do: Port.command(port, line <> "\n")

  defp await_line(port, prefix, timeout \\ 10_000) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        if String.starts_with?(line, prefix),
          do: String.replace_prefix(line, prefix, ""),
          else: await_line(port, prefix, timeout)

      {^port, {:data, _}} ->
        await_line(port, prefix, timeout)
    after
      timeout -> flunk("the Rust node printed no line starting with #{inspect(prefix)}")
    end
  end

  test "a Rust node syncs both ways, follows live changes and vanishes when killed", %{bin: bin} do
    ClusterHelper.add_role(:elixir_role)
    {rust, port, os_pid} = start_rust(bin, ["rusty", "{shard,1}", ~s("cache")])

    # Initial sync both ways (pull_interval is a minute: broadcasts and the
    # node-up pulls must do it).
    wait_until(fn ->
      Enum.sort(ClusterHelper.get_roles(rust)) == Enum.sort([:rusty, {:shard, 1}, "cache"])
    end)

    wait_until(fn -> :elixir_role in ch(rust, :get_roles, [node(), ClusterHelper]) end)
    assert rust in Node.list()

    # Live, Rust -> Elixir, through the node's standard input.
    command(port, "add {live, 2}")
    assert await_line(port, "ok: ") =~ "add {live,2}"
    wait_until(fn -> ClusterHelper.get_nodes({:live, 2}) == [rust] end)
    command(port, "remove rusty")
    wait_until(fn -> ClusterHelper.get_nodes(:rusty) == [] end)
    command(port, "add {oops")
    assert await_line(port, "error: ") =~ "bad role"

    # Live, Elixir -> Rust.
    ClusterHelper.add_role("from elixir")
    wait_until(fn -> "from elixir" in ch(rust, :get_roles, [node(), ClusterHelper]) end)
    ClusterHelper.remove_role("from elixir")
    wait_until(fn -> "from elixir" not in ch(rust, :get_roles, [node(), ClusterHelper]) end)

    # Overlapping scopes: a scope the test node is not in stays invisible here.
    command(port, "join rust_only_scope")
    assert await_line(port, "ok: ") =~ "joined"
    assert ClusterHelper.get_nodes({:live, 2}, :rust_only_scope) == []

    # kill -9: its roles vanish here.
    kill9(os_pid)

    wait_until(
      fn -> ClusterHelper.get_roles(rust) == [] and rust not in ClusterHelper.all_nodes() end,
      30_000
    )
  end

  test "the 0.5.1 stand-in, our node and a Rust node share one view", %{bin: bin} do
    l = Cluster.start_legacy("rl_l", pull_interval: 300, roles: [:legacy_role])
    {rust, port, _} = start_rust(bin, ["rusty"])
    # The Rust node meshes with the 0.5.1 node through this one.
    wait_until(fn -> ClusterHelper.get_nodes(:legacy_role) == [l] end)
    wait_until(fn -> ch(l, :get_nodes, [:rusty]) == [rust] end)
    wait_until(fn -> ch(rust, :get_roles, [l, ClusterHelper]) == [:legacy_role] end)
    command(port, "add rust_live")
    wait_until(fn -> ch(l, :get_nodes, [:rust_live]) == [rust] end)
    ch(l, :add_role, [:legacy_live])
    wait_until(fn -> :legacy_live in ch(rust, :get_roles, [l, ClusterHelper]) end)
  end
end
