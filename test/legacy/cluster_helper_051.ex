# Stand-in for a node running the original Elixir ClusterHelper 0.5.1.
#
# Speaks exactly the 0.5.1 wire protocol of shared/PROTOCOL.md and nothing
# more, so tests can check that our nodes live with 0.5.1 nodes. It defines
# modules literally named ClusterHelper and ClusterHelper.NodeConfig (the names
# 0.5.1 peers have on the wire): NEVER compile it into the cluster_helper app.
# Compile it only on a node of its own (a :peer, an `elixir` process).
#
# Self-contained: one file, only Elixir, Logger and OTP's :pg / :erpc. Works on
# OTP 25+ with Elixir 1.14+. Start it on a fresh node in one of two ways:
#
#     # from a shell (e.g. Rust tests)
#     elixir --name legacy@127.0.0.1 --cookie C -r test/legacy/cluster_helper_051.ex \
#       -e 'ClusterHelper.NodeConfig.start_standalone(roles: [:web])' --no-halt
#
#     # from an Elixir test node, on a :peer that has no cluster_helper app
#     :erpc.call(peer, Application, :ensure_all_started, [:elixir])
#     :erpc.call(peer, Code, :compile_string, [File.read!(path), path])
#     :erpc.call(peer, ClusterHelper.NodeConfig, :start_standalone, [[roles: [:web]]])
#
# Protocol, per scope S (an atom; default ClusterHelper, env :scope):
#   * `:pg` scope S runs on the node (started bare, as 0.5.1 does); the server
#     joins group :all_nodes in it.
#   * A local change that changes something bumps the generation of S by one
#     and is sent to every other member of :all_nodes as
#     {:new_roles, S, roles, node()} or {:remove_roles, S, roles, node()},
#     listing only the roles that really changed.
#   * Pulls are :erpc calls: ClusterHelper.get_my_roles(S) (pull_timeout),
#     ClusterHelper.NodeConfig.__get_generation__(S) (1000 ms, 0 when not in S),
#     ClusterHelper.NodeConfig.__get_scopes__() (2000 ms).
#   * nodeup (visible): ask the peer's scopes, pull roles and generation for
#     each shared scope. nodedown: drop the node from every scope.
#   * Every pull_interval: per scope, per node of Node.list(), ask the
#     generation and pull roles only when it changed (or could not be read);
#     drop nodes that hold roles in S but are not in Node.list().
#   * leave_scope sends nothing: peers notice at their next pull (generation 0).
#
# Env keys (application :cluster_helper, as 0.5.1): roles, scopes, scope,
# pull_timeout (5000), pull_interval (7000). `start_standalone/1` takes the
# same keys as a keyword list and puts them in the env first.

defmodule ClusterHelper do
  @moduledoc "0.5.1 stand-in: public API (test support only)."

  alias ClusterHelper.NodeConfig

  def add_role(role, scope \\ nil), do: add_roles([role], scope)
  def add_roles(roles, scope \\ nil) when is_list(roles), do: call({:add, s(scope), roles})
  def remove_role(role, scope \\ nil), do: remove_roles([role], scope)
  def remove_roles(roles, scope \\ nil) when is_list(roles), do: call({:remove, s(scope), roles})
  def get_nodes(role, scope \\ nil), do: call({:get_nodes, s(scope), role})
  def get_roles(node, scope \\ nil), do: call({:get_roles, s(scope), node})
  def all_nodes(scope \\ nil), do: call({:all_nodes, s(scope)})
  def get_my_roles(scope \\ nil), do: call({:get_my_roles, s(scope)})
  def join_scope(scope) when is_atom(scope), do: call({:join_scope, scope})
  def leave_scope(scope) when is_atom(scope), do: call({:leave_scope, scope})
  def list_scopes, do: NodeConfig.__get_scopes__()
  def local_node?(node), do: node == Node.self()

  defp call(request), do: GenServer.call(NodeConfig, request)
  defp s(nil), do: Application.get_env(:cluster_helper, :scope, ClusterHelper)
  defp s(scope) when is_atom(scope), do: scope
end

defmodule ClusterHelper.NodeConfig do
  @moduledoc "0.5.1 stand-in: the server (test support only)."

  use GenServer
  require Logger

  # scopes:   MapSet of joined scopes
  # mine:     %{scope => [role]}            local roles, in insertion order
  # gens:     %{scope => integer}           local generation per scope
  # remote:   %{scope => %{node => [role]}} what we know of other nodes
  # seen_gen: %{{scope, node} => integer}   last generation pulled from a node
  defstruct scopes: MapSet.new(), mine: %{}, gens: %{}, remote: %{}, seen_gen: %{}

  @doc "Puts `env` in the :cluster_helper env and starts the server, unlinked."
  def start_standalone(env \\ []) do
    {:ok, _} = Application.ensure_all_started(:logger)
    Enum.each(env, fn {key, value} -> Application.put_env(:cluster_helper, key, value) end)
    GenServer.start(__MODULE__, [], name: __MODULE__)
  end

  def stop, do: GenServer.stop(__MODULE__)

  def __get_generation__(scope), do: GenServer.call(__MODULE__, {:generation, scope})
  def __get_scopes__, do: GenServer.call(__MODULE__, :scopes)

  @impl true
  def init(_) do
    :net_kernel.monitor_nodes(true, node_type: :visible)
    default = default_scope()
    scopes = Application.get_env(:cluster_helper, :scopes) || [default]
    state = Enum.reduce(scopes, %__MODULE__{}, &join(&2, &1))
    {state, _} = add(state, default, Application.get_env(:cluster_helper, :roles, []))
    Enum.each(Node.list(), &spawn_nodeup_pull(state, &1))
    schedule_tick()
    {:ok, state}
  end

  @impl true
  def handle_call({:add, scope, roles}, _from, state) do
    {state, added} = add(state, scope, roles)
    if added != [], do: broadcast(scope, {:new_roles, scope, added, Node.self()})
    {:reply, :ok, state}
  end

  def handle_call({:remove, scope, roles}, _from, state) do
    current = Map.get(state.mine, scope, [])
    removed = Enum.filter(Enum.uniq(roles), &(&1 in current))

    if removed == [] do
      {:reply, :ok, state}
    else
      state = %{state | mine: Map.put(state.mine, scope, current -- removed)}
      state = bump(state, scope)
      broadcast(scope, {:remove_roles, scope, removed, Node.self()})
      {:reply, :ok, state}
    end
  end

  def handle_call({:get_my_roles, scope}, _from, state),
    do: {:reply, Map.get(state.mine, scope, []), state}

  def handle_call({:get_nodes, scope, role}, _from, state) do
    nodes = for {node, roles} <- view(state, scope), role in roles, do: node
    {:reply, nodes, state}
  end

  def handle_call({:get_roles, scope, node}, _from, state),
    do: {:reply, Map.get(view(state, scope), node, []), state}

  def handle_call({:all_nodes, scope}, _from, state),
    do: {:reply, for({node, [_ | _]} <- view(state, scope), do: node), state}

  def handle_call({:join_scope, scope}, _from, state) do
    if MapSet.member?(state.scopes, scope) do
      {:reply, {:error, :already_joined}, state}
    else
      state = join(state, scope)
      Enum.each(Node.list(), &spawn_pull(scope, &1))
      {:reply, :ok, state}
    end
  end

  def handle_call({:leave_scope, scope}, _from, state) do
    if MapSet.member?(state.scopes, scope) do
      :pg.leave(scope, :all_nodes, self())

      state = %{
        state
        | scopes: MapSet.delete(state.scopes, scope),
          mine: Map.delete(state.mine, scope),
          gens: Map.delete(state.gens, scope),
          remote: Map.delete(state.remote, scope),
          seen_gen: Map.reject(state.seen_gen, fn {{s, _}, _} -> s == scope end)
      }

      {:reply, :ok, state}
    else
      {:reply, {:error, :not_joined}, state}
    end
  end

  def handle_call({:generation, scope}, _from, state),
    do: {:reply, Map.get(state.gens, scope, 0), state}

  def handle_call(:scopes, _from, state), do: {:reply, MapSet.to_list(state.scopes), state}

  @impl true
  def handle_info({:new_roles, scope, roles, node}, state) when is_list(roles) do
    if node != Node.self() and MapSet.member?(state.scopes, scope) do
      {:noreply,
       put_remote(state, scope, node, Enum.uniq(remote_roles(state, scope, node) ++ roles))}
    else
      {:noreply, state}
    end
  end

  def handle_info({:remove_roles, scope, roles, node}, state) when is_list(roles) do
    if node != Node.self() and MapSet.member?(state.scopes, scope) do
      {:noreply, put_remote(state, scope, node, remote_roles(state, scope, node) -- roles)}
    else
      {:noreply, state}
    end
  end

  def handle_info({:nodeup, node, _info}, state) do
    spawn_nodeup_pull(state, node)
    {:noreply, state}
  end

  def handle_info({:nodedown, node, _info}, state) do
    remote = Map.new(state.remote, fn {scope, nodes} -> {scope, Map.delete(nodes, node)} end)
    seen = Map.reject(state.seen_gen, fn {{_, n}, _} -> n == node end)
    {:noreply, %{state | remote: remote, seen_gen: seen}}
  end

  def handle_info({:pulled, scope, node, roles, gen}, state) do
    if MapSet.member?(state.scopes, scope) and node in Node.list() do
      state = put_remote(state, scope, node, roles)
      seen = if gen, do: Map.put(state.seen_gen, {scope, node}, gen), else: state.seen_gen
      {:noreply, %{state | seen_gen: seen}}
    else
      {:noreply, state}
    end
  end

  def handle_info(:tick, state) do
    connected = Node.list()

    state =
      Enum.reduce(state.scopes, state, fn scope, acc ->
        Enum.each(
          connected,
          &spawn_generation_pull(scope, &1, Map.get(acc.seen_gen, {scope, &1}))
        )

        stale = Map.keys(view(acc, scope)) -- [Node.self() | connected]
        Enum.reduce(stale, acc, &put_remote(&2, scope, &1, []))
      end)

    schedule_tick()
    {:noreply, state}
  end

  def handle_info(msg, state) do
    Logger.debug("ClusterHelper 0.5.1 stand-in: ignored #{inspect(msg)}")
    {:noreply, state}
  end

  ## Local state

  defp join(state, scope) do
    case :pg.start(scope) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end

    :ok = :pg.join(scope, :all_nodes, self())

    %{
      state
      | scopes: MapSet.put(state.scopes, scope),
        mine: Map.put_new(state.mine, scope, []),
        gens: Map.put_new(state.gens, scope, 0)
    }
  end

  defp add(state, scope, roles) do
    state = if MapSet.member?(state.scopes, scope), do: state, else: join(state, scope)
    current = Map.get(state.mine, scope, [])
    added = Enum.uniq(roles) -- current

    if added == [] do
      {state, []}
    else
      state = %{state | mine: Map.put(state.mine, scope, current ++ added)}
      {bump(state, scope), added}
    end
  end

  defp bump(state, scope), do: %{state | gens: Map.update(state.gens, scope, 1, &(&1 + 1))}

  defp broadcast(scope, msg) do
    for pid <- :pg.get_members(scope, :all_nodes), pid != self(), do: send(pid, msg)
    :ok
  end

  defp remote_roles(state, scope, node), do: get_in(state.remote, [scope, node]) || []

  defp put_remote(state, scope, node, []),
    do: %{state | remote: Map.update(state.remote, scope, %{}, &Map.delete(&1, node))}

  defp put_remote(state, scope, node, roles),
    do: %{
      state
      | remote: Map.update(state.remote, scope, %{node => roles}, &Map.put(&1, node, roles))
    }

  # Remote nodes plus the local one, as one map node => roles.
  defp view(state, scope) do
    remote = Map.get(state.remote, scope, %{})

    case Map.get(state.mine, scope, []) do
      [] -> remote
      mine -> Map.put(remote, Node.self(), mine)
    end
  end

  ## Pulls (each in a process of its own; results come back as {:pulled, ...})

  defp spawn_nodeup_pull(state, node) do
    server = self()
    local_scopes = state.scopes

    spawn(fn ->
      case rpc(node, __MODULE__, :__get_scopes__, [], 2000) do
        {:ok, scopes} when is_list(scopes) ->
          for scope <- scopes, MapSet.member?(local_scopes, scope), do: pull(server, scope, node)

        _ ->
          :ok
      end
    end)
  end

  defp spawn_pull(scope, node) do
    server = self()
    spawn(fn -> pull(server, scope, node) end)
  end

  defp spawn_generation_pull(scope, node, known) do
    server = self()

    spawn(fn ->
      case rpc(node, __MODULE__, :__get_generation__, [scope], 1000) do
        {:ok, ^known} -> :ok
        _ -> pull(server, scope, node)
      end
    end)
  end

  defp pull(server, scope, node) do
    timeout = Application.get_env(:cluster_helper, :pull_timeout, 5000)

    with {:ok, roles} when is_list(roles) <-
           rpc(node, ClusterHelper, :get_my_roles, [scope], timeout) do
      gen =
        case rpc(node, __MODULE__, :__get_generation__, [scope], 1000) do
          {:ok, gen} when is_integer(gen) -> gen
          _ -> nil
        end

      send(server, {:pulled, scope, node, roles, gen})
    end
  end

  defp rpc(node, mod, fun, args, timeout) do
    {:ok, :erpc.call(node, mod, fun, args, timeout)}
  catch
    kind, reason ->
      Logger.debug("ClusterHelper 0.5.1 stand-in: #{inspect(kind)} #{inspect(reason)}")
      :error
  end

  defp schedule_tick,
    do:
      Process.send_after(
        self(),
        :tick,
        Application.get_env(:cluster_helper, :pull_interval, 7000)
      )

  defp default_scope, do: Application.get_env(:cluster_helper, :scope, ClusterHelper)
end
