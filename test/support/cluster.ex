defmodule ClusterHelper.Test.Cluster do
  @moduledoc """
  Real BEAM peer nodes for multi-node tests (test support only).

  Owns the `:peer` nodes it starts; a test stops them with `stop/1` (or lets
  the ExUnit `on_exit` installed by `start_peer/2` do it). Two kinds of peer:

    * `start_node/2`: a node running our `:cluster_helper` app (with the NIF)
      and the env given;
    * `start_legacy/2`: a node running the ClusterHelper 0.5.1 stand-in of
      `test/legacy/cluster_helper_051.ex`, with no access to our app's code.
  """

  @legacy_source Path.expand("../legacy/cluster_helper_051.ex", __DIR__)

  @doc "Starts a peer running our application with `env` (keyword of :cluster_helper keys)."
  def start_node(prefix, env \\ []) do
    node = start_peer(prefix, code_paths(:all))
    start_app(node, env)
    node
  end

  @doc "Starts a peer running the ClusterHelper 0.5.1 stand-in with `env`."
  def start_legacy(prefix, env \\ []) do
    node = start_peer(prefix, code_paths(:elixir_only))
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:elixir])
    quiet(node)
    _ = :erpc.call(node, Code, :compile_string, [File.read!(@legacy_source), @legacy_source])
    {:ok, _} = :erpc.call(node, ClusterHelper.NodeConfig, :start_standalone, [env])
    node
  end

  @doc "Starts a peer with Elixir only (no ClusterHelper code at all)."
  def start_bare(prefix) do
    node = start_peer(prefix, code_paths(:elixir_only))
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:elixir])
    quiet(node)
    node
  end

  @doc "Puts `env` on `node` and (re)starts :cluster_helper there."
  def start_app(node, env) do
    quiet(node)

    for {key, value} <- env,
        do: :ok = :erpc.call(node, Application, :put_env, [:cluster_helper, key, value])

    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:cluster_helper])
    :ok
  end

  # Peers log through our group leader: keep them to errors.
  defp quiet(node) do
    :ok = :erpc.call(node, Application, :put_env, [:logger, :level, :error])
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:logger])
    :ok = :erpc.call(node, Logger, :configure, [[level: :error]])
  end

  @doc "Starts a bare peer (connected, same cookie); stopped at test exit."
  def start_peer(prefix, paths) do
    name = :"#{prefix}_#{System.unique_integer([:positive])}"
    cookie = Atom.to_charlist(Node.get_cookie())
    # OTP 25's global sometimes reads the crossing connects of a forming mesh
    # as a lost connection and disconnects a healthy pair to "prevent
    # overlapping partitions"; nobody reconnects them (there is no libcluster
    # here), so a test would see two nodes that never meet. These tests are
    # about ClusterHelper, not about global: keep global from cutting links.
    args =
      [~c"-setcookie", cookie, ~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false"] ++
        Enum.flat_map(paths, &[~c"-pa", &1])

    {:ok, pid, node} =
      :peer.start_link(%{name: name, host: ~c"127.0.0.1", args: args, wait_boot: 30_000})

    # Unlink: a peer must outlive nothing but the test; on_exit stops it.
    Process.unlink(pid)
    :persistent_term.put({__MODULE__, node}, pid)
    ExUnit.Callbacks.on_exit(fn -> stop(node) end)
    true = Node.connect(node)
    node
  end

  @doc "Stops a peer started here (idempotent)."
  def stop(node) do
    case :persistent_term.get({__MODULE__, node}, nil) do
      nil ->
        :ok

      pid ->
        :persistent_term.erase({__MODULE__, node})

        try do
          :peer.stop(pid)
        catch
          :exit, _ -> :ok
        end
    end
  end

  @doc "Polls `fun` every 50 ms until it returns a truthy value; fails after `timeout`."
  def wait_until(fun, timeout \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline)
  end

  defp do_wait(fun, deadline) do
    case safe(fun) do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          raise ExUnit.AssertionError, message: "condition not met in time: #{inspect(fun)}"
        end

        Process.sleep(50)
        do_wait(fun, deadline)
    end
  end

  defp safe(fun) do
    fun.()
  catch
    _, _ -> false
  end

  @doc "Calls `ClusterHelper.fun(args)` on `node` (ours or the stand-in: same names)."
  def ch(node, fun, args \\ []), do: :erpc.call(node, ClusterHelper, fun, args, 5_000)

  # Our app's peers get the whole code path; stand-in peers only Elixir and
  # Logger, so that our own ClusterHelper modules cannot be loaded there.
  defp code_paths(:all), do: :code.get_path()

  defp code_paths(:elixir_only) do
    for app <- [:elixir, :logger], do: :filename.join(:code.lib_dir(app), ~c"ebin")
  end
end
