defmodule ClusterHelper.NodeConfig do
  @moduledoc """
  The driver: a GenServer that feeds the Rust sync engine and carries out
  what it decides.

  Registered as `ClusterHelper.NodeConfig` on every node: 0.5.1 peers and our
  Rust nodes address it by that name. It turns `:pg` group changes
  (`:pg.monitor_scope/1`), `:net_kernel.monitor_nodes/2` events, protocol
  messages and erpc results into engine inputs (`ClusterHelper.Native`) and
  executes the returned actions: join/leave `:pg` groups, send, ask and pull
  over erpc (in `ClusterHelper.TaskSupervisor` tasks), fire events.

  It owns no data: the index, the local roles and the joined scopes live in
  the NIF resource (see `ClusterHelper.Application`). After a crash the new
  process re-joins the `:pg` groups of every scope the resource says is
  joined, monitors scopes and nodes again, and tells the engine what it finds.

  `__get_generation__/1` and `__get_scopes__/0` are the erpc entry points of
  the 0.5.1 protocol; they read the NIF and never touch this process.
  """

  use GenServer

  require Logger

  alias ClusterHelper.{EventHandler, Native, Protocol}

  @tasks ClusterHelper.TaskSupervisor
  @scopes ClusterHelper.ScopeSupervisor
  @generation_timeout 1_000
  @scopes_timeout 2_000

  # res:    the NIF resource
  # ours:   our own :pg group (Native.ours_group/0)
  # scopes: %{scope => {watcher pid, :pg scope pid}} for every scope we watch
  # tasks:  %{task ref => request} for erpc work in flight
  # busy:   %{request key => task ref}: at most one task per key (see spawn_task/2)
  # queued: %{request key => request} asked for while its key was busy
  defstruct [:res, :ours, scopes: %{}, tasks: %{}, busy: %{}, queued: %{}]

  @doc false
  def start_link(_), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @doc false
  # Sends a write to the server; a raise in the server is raised again in the caller.
  @spec call(term()) :: term()
  def call(request), do: call(request, 20)

  defp call(request, retries) do
    case GenServer.call(__MODULE__, request, 15_000) do
      {:reply, reply} -> reply
      {:raise, kind, reason, stack} -> :erlang.raise(kind, reason, stack)
    end
  catch
    # The driver is being restarted by its supervisor: wait for the new one.
    :exit, {:noproc, _} when retries > 0 ->
      Process.sleep(50)
      call(request, retries - 1)
  end

  @doc """
  Generation of `scope` on this node: 0 when not joined, one more for each
  local change that changed something. A 0.5.1 erpc entry point.

      iex> ClusterHelper.join_scope(:doc_generation)
      :ok
      iex> ClusterHelper.NodeConfig.__get_generation__(:doc_generation)
      0
      iex> ClusterHelper.add_roles([:a, :b], :doc_generation)
      :ok
      iex> ClusterHelper.NodeConfig.__get_generation__(:doc_generation)
      1
      iex> ClusterHelper.leave_scope(:doc_generation)
      :ok
      iex> ClusterHelper.NodeConfig.__get_generation__(:doc_generation)
      0
  """
  @spec __get_generation__(atom()) :: non_neg_integer()
  def __get_generation__(scope) when is_atom(scope) do
    {res, _, _} = ClusterHelper.Application.state()
    Native.generation(res, scope)
  end

  def __get_generation__(_), do: 0

  @doc """
  Scopes this node has joined, as `ClusterHelper.list_scopes/0`. A 0.5.1
  erpc entry point.

      iex> ClusterHelper.join_scope(:doc_get_scopes)
      :ok
      iex> :doc_get_scopes in ClusterHelper.NodeConfig.__get_scopes__()
      true
      iex> ClusterHelper.leave_scope(:doc_get_scopes)
      :ok
  """
  @spec __get_scopes__() :: [atom()]
  def __get_scopes__ do
    {res, _, _} = ClusterHelper.Application.state()
    Native.list_scopes(res)
  end

  ## Callbacks

  @impl true
  def init(_) do
    {res, default_scope, boot} = ClusterHelper.Application.state()
    Logger.metadata(cluster_helper: Node.self())
    state = %__MODULE__{res: res, ours: Native.ours_group()}
    # The NIF builds actions with binary_to_term in safe mode: their atoms must exist.
    _ = Protocol.ours_tags()
    _ = :net_kernel.monitor_nodes(true, node_type: :visible)

    # After a crash: the resource knows which scopes we are in.
    state = Enum.reduce(Native.list_scopes(res), state, &run(&2, {:join_groups, &1}))

    state =
      if :atomics.compare_exchange(boot, 1, 0, 1) == :ok,
        do: apply_config(state, default_scope),
        else: state

    state = Enum.reduce(Node.list(), state, &input(&2, fn r -> Native.node_up(r, &1) end))
    schedule_tick()
    {:ok, state}
  end

  @impl true
  def handle_call({:add_roles, scope, roles}, _from, state),
    do: reply(state, fn res -> Native.add_roles(res, scope, roles) end)

  def handle_call({:remove_roles, scope, roles}, _from, state),
    do: reply(state, fn res -> Native.remove_roles(res, scope, roles) end)

  def handle_call({:join_scope, scope}, _from, state),
    do: reply(state, fn res -> Native.join_scope(res, scope) end)

  def handle_call({:leave_scope, scope}, _from, state),
    do: reply(state, fn res -> Native.leave_scope(res, scope) end)

  def handle_call(request, from, state) do
    Logger.warning(
      "ClusterHelper: unknown call #{inspect(request)} from #{inspect(from)} ignored"
    )

    {:reply, {:error, :unknown_call}, state}
  end

  @impl true
  def handle_cast(request, state) do
    Logger.warning("ClusterHelper: unknown cast #{inspect(request)} ignored")
    {:noreply, state}
  end

  @impl true
  def handle_info({:nodeup, node, _info}, state),
    do: {:noreply, input(state, &Native.node_up(&1, node))}

  def handle_info({:nodedown, node, _info}, state),
    do: {:noreply, input(state, &Native.node_down(&1, node))}

  def handle_info(:tick, state) do
    schedule_tick()
    {:noreply, input(state, &Native.tick(&1, Node.list()))}
  end

  # :pg.monitor_scope/1 notifications, forwarded by the scope's watcher.
  def handle_info({__MODULE__, :pg, watcher, scope, group, pids}, state) do
    case state.scopes do
      %{^scope => {^watcher, _}} -> {:noreply, membership(state, scope, group, pids)}
      # from a watcher of a scope we left since
      _ -> {:noreply, state}
    end
  end

  # A task finished: {ref, result}.
  def handle_info({ref, result}, state) when is_reference(ref) and is_map_key(state.tasks, ref) do
    Process.demonitor(ref, [:flush])
    {request, tasks} = Map.pop(state.tasks, ref)
    {:noreply, task_done(%{state | tasks: tasks}, request, result)}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, state) when is_map_key(state.tasks, ref) do
    Logger.warning("ClusterHelper: erpc task failed: #{inspect(reason)}")
    {request, tasks} = Map.pop(state.tasks, ref)
    {:noreply, task_done(%{state | tasks: tasks}, request, :error)}
  end

  def handle_info({:DOWN, _, :process, pid, reason} = msg, state) do
    case Enum.find(state.scopes, fn {_, {_, scope_pid}} -> scope_pid == pid end) do
      {scope, _} ->
        # Our group memberships died with it: restart clean and re-join.
        Logger.error("ClusterHelper: :pg scope #{inspect(scope)} went down: #{inspect(reason)}")
        {:stop, {:pg_scope_down, scope}, state}

      nil ->
        unknown(msg, state)
    end
  end

  def handle_info(msg, state) do
    if Protocol.message?(msg) do
      case safe(fn -> Native.message(state.res, msg) end) do
        {:ok, actions} ->
          {:noreply, Enum.reduce(actions, state, &run(&2, &1))}

        {:error, reason} ->
          Logger.warning("ClusterHelper: dropped #{inspect(msg)}: #{inspect(reason)}")
          {:noreply, state}
      end
    else
      unknown(msg, state)
    end
  end

  defp unknown(msg, state) do
    Logger.warning("ClusterHelper: unknown message #{inspect(msg)} ignored")
    {:noreply, state}
  end

  ## Engine inputs

  # Feeds one input; a failure (e.g. a Rust panic) is logged, the server lives.
  defp input(state, fun) do
    case safe(fn -> fun.(state.res) end) do
      {:ok, actions} ->
        Enum.reduce(actions, state, &run(&2, &1))

      {:error, reason} ->
        Logger.warning("ClusterHelper: engine refused input: #{inspect(reason)}")
        state
    end
  end

  # Feeds a write from a caller; the caller gets the result, or the raise.
  defp reply(state, fun) do
    case fun.(state.res) do
      {:ok, actions} -> {:reply, {:reply, :ok}, Enum.reduce(actions, state, &run(&2, &1))}
      {:error, _} = error -> {:reply, {:reply, error}, state}
    end
  catch
    kind, reason -> {:reply, {:raise, kind, reason, __STACKTRACE__}, state}
  end

  defp safe(fun) do
    fun.()
  catch
    kind, reason ->
      Logger.error(
        "ClusterHelper: NIF call failed: " <> Exception.format(kind, reason, __STACKTRACE__)
      )

      {:error, {kind, reason}}
  end

  defp apply_config(state, default_scope) do
    scopes =
      case Application.get_env(:cluster_helper, :scopes) do
        nil -> [default_scope]
        scopes when is_list(scopes) -> scopes
        bad -> config_error(:scopes, bad, [default_scope])
      end

    state =
      Enum.reduce(scopes, state, fn
        scope, acc when is_atom(scope) and scope != nil -> input(acc, &join_scope(&1, scope))
        bad, acc -> config_error(:scopes, bad, acc)
      end)

    case Application.get_env(:cluster_helper, :roles, []) do
      [] -> state
      roles when is_list(roles) -> input(state, &Native.add_roles(&1, default_scope, roles))
      bad -> config_error(:roles, bad, state)
    end
  end

  defp join_scope(res, scope) do
    case Native.join_scope(res, scope) do
      {:error, :already_joined} -> {:ok, []}
      other -> other
    end
  end

  defp config_error(key, value, fallback) do
    Logger.error("ClusterHelper: config :cluster_helper, #{key} is invalid: #{inspect(value)}")
    fallback
  end

  # Tells the engine, for each other node in `pids`, whether it is still in the group.
  defp membership(state, scope, group, pids) do
    if group in [state.ours, Protocol.legacy_group()] do
      members = :pg.get_members(scope, group)

      pids
      |> Enum.map(&node/1)
      |> Enum.uniq()
      |> Enum.reject(&(&1 == node()))
      |> Enum.reduce(state, fn peer, acc ->
        present = Enum.any?(members, &(node(&1) == peer))
        input(acc, &Native.member(&1, scope, group, peer, present))
      end)
    else
      state
    end
  end

  ## Actions

  defp run(state, {:join_groups, scope}) do
    state = watch_scope(state, scope)
    join_group(scope, state.ours)
    join_group(scope, Protocol.legacy_group())
    state
  end

  defp run(state, {:leave_groups, scope}) do
    _ = :pg.leave(scope, state.ours, self())
    _ = :pg.leave(scope, Protocol.legacy_group(), self())
    unwatch_scope(state, scope)
  end

  defp run(state, {:send, node, scope, msg, :legacy}) do
    for pid <- :pg.get_members(scope, Protocol.legacy_group()), node(pid) == node do
      send(pid, msg)
    end

    state
  end

  defp run(state, {:send, node, _scope, msg, :ours}) do
    _ = Process.send({__MODULE__, node}, msg, [:noconnect])
    state
  end

  defp run(state, {:ask_scopes, _node} = request), do: spawn_task(state, request)
  defp run(state, {:ask_generation, _node, _scope} = request), do: spawn_task(state, request)
  defp run(state, {:pull, _node, _scope, _token} = request), do: spawn_task(state, request)

  defp run(state, {:event, _, _, _} = event), do: dispatch(state, event)
  defp run(state, {:event, _, _, _, _} = event), do: dispatch(state, event)

  defp run(state, action) do
    Logger.error("ClusterHelper: unknown engine action #{inspect(action)} ignored")
    state
  end

  defp dispatch(state, event) do
    EventHandler.dispatch(event)
    state
  end

  defp join_group(scope, group) do
    unless self() in :pg.get_local_members(scope, group), do: :ok = :pg.join(scope, group, self())
  end

  # Starts the :pg scope under our supervisor if needed and subscribes to it.
  # The initial members are told to the engine as if they had just joined.
  defp watch_scope(state, scope) do
    if Map.has_key?(state.scopes, scope) do
      state
    else
      pid = ensure_scope(scope)
      Process.monitor(pid)
      {watcher, groups} = start_watcher(scope)
      state = %{state | scopes: Map.put(state.scopes, scope, {watcher, pid})}
      Enum.reduce(groups, state, fn {group, pids}, acc -> membership(acc, scope, group, pids) end)
    end
  end

  defp unwatch_scope(state, scope) do
    case Map.pop(state.scopes, scope) do
      {nil, _} ->
        state

      {{watcher, _pid}, scopes} ->
        Process.unlink(watcher)
        Process.exit(watcher, :kill)
        %{state | scopes: scopes}
    end
  end

  # OTP 25's :pg crashes (case_clause in its 'DOWN' handling) when one process
  # both joins groups and monitors the scope, and then dies. So the server
  # joins, and a linked watcher process of its own calls monitor_scope and
  # forwards what it hears.
  defp start_watcher(scope) do
    server = self()

    watcher =
      spawn_link(fn ->
        {ref, groups} = :pg.monitor_scope(scope)
        send(server, {__MODULE__, :watching, self(), groups})
        forward(server, scope, ref)
      end)

    receive do
      {__MODULE__, :watching, ^watcher, groups} -> {watcher, groups}
    after
      5_000 -> exit({:pg_monitor_scope_timeout, scope})
    end
  end

  defp forward(server, scope, ref) do
    receive do
      {^ref, _join_or_leave, group, pids} ->
        send(server, {__MODULE__, :pg, self(), scope, group, pids})
        forward(server, scope, ref)
    end
  end

  defp ensure_scope(scope) do
    spec = %{id: scope, start: {:pg, :start_link, [scope]}}

    case DynamicSupervisor.start_child(@scopes, spec) do
      {:ok, pid} -> pid
      # Already running: ours from before a crash, or started by the user.
      {:error, {:already_started, pid}} -> pid
    end
  end

  ## erpc work, one supervised task per request

  # One task per {kind, node, scope} at a time, whatever the engine asks: a
  # pull asked for while one is running waits for it (the newest one only);
  # a duplicate ask is dropped (the running one answers it).
  defp spawn_task(state, request) do
    key = key(request)

    cond do
      not Map.has_key?(state.busy, key) ->
        timeout = Application.get_env(:cluster_helper, :pull_timeout, 5_000)
        task = Task.Supervisor.async_nolink(@tasks, fn -> remote(request, timeout) end)

        %{
          state
          | tasks: Map.put(state.tasks, task.ref, request),
            busy: Map.put(state.busy, key, task.ref)
        }

      elem(request, 0) == :pull ->
        %{state | queued: Map.put(state.queued, key, request)}

      true ->
        state
    end
  end

  defp key({:pull, node, scope, _token}), do: {:pull, node, scope}
  defp key(request), do: request

  defp task_done(state, request, result) do
    key = key(request)
    state = %{state | busy: Map.delete(state.busy, key)}
    state = feed_result(state, request, result)
    {queued, rest} = Map.pop(state.queued, key)
    state = %{state | queued: rest}

    # The engine may have asked again while handling the result: that is newer.
    if queued && not Map.has_key?(state.busy, key), do: spawn_task(state, queued), else: state
  end

  defp feed_result(state, {:ask_scopes, node}, result),
    do: input(state, &Native.scopes_result(&1, node, result))

  defp feed_result(state, {:ask_generation, node, scope}, result),
    do: input(state, &Native.generation_result(&1, node, scope, result))

  defp feed_result(state, {:pull, node, scope, token}, result),
    do: input(state, &Native.pull_result(&1, node, scope, token, result))

  # Runs in the task. Every failure of the remote side becomes :error.
  defp remote({:ask_scopes, node}, _timeout) do
    with {:ok, scopes} when is_list(scopes) <-
           erpc(node, __MODULE__, :__get_scopes__, [], @scopes_timeout),
         do: {:ok, scopes},
         else: (_ -> :error)
  end

  defp remote({:ask_generation, node, scope}, _timeout) do
    case generation(node, scope) do
      {:ok, gen} -> {:ok, gen}
      _ -> :error
    end
  end

  defp remote({:pull, node, scope, _token}, timeout) do
    with {:ok, g1} <- generation(node, scope),
         {:ok, roles} when is_list(roles) <-
           erpc(node, ClusterHelper, :get_my_roles, [scope], timeout),
         {:ok, g2} <- generation(node, scope) do
      {:ok, g1, roles, g2}
    else
      _ -> :error
    end
  end

  defp generation(node, scope) do
    case erpc(node, __MODULE__, :__get_generation__, [scope], @generation_timeout) do
      {:ok, gen} when is_integer(gen) and gen >= 0 -> {:ok, gen}
      _ -> :error
    end
  end

  defp erpc(node, mod, fun, args, timeout) do
    {:ok, :erpc.call(node, mod, fun, args, timeout)}
  catch
    kind, reason ->
      Logger.debug(
        "ClusterHelper: erpc #{inspect(mod)}.#{fun} on #{node}: #{inspect({kind, reason})}"
      )

      :error
  end

  defp schedule_tick do
    interval = Application.get_env(:cluster_helper, :pull_interval, 7_000)
    Process.send_after(self(), :tick, interval)
  end
end
