defmodule Bench.Baseline051 do
  @moduledoc """
  The storage layout and read path of ClusterHelper 0.5.1, for side-by-side
  benchmarks in one VM (bench/ only; never part of the library).

    * an ETS `:bag` (`:protected`, `:compressed`, `read_concurrency: true`,
      `write_concurrency: true`) holding `{{:scope, s, :role, r}, node}` and
      `{{:scope, s, :node, n}, role}`;
    * an ETS `:set` holding `{{:scope, s, n}}`, read by `all_nodes/1` with
      `:ets.select/2`;
    * every read resolves the default scope with `Application.get_env/3`;
    * `get_my_roles/1` is a `GenServer.call`;
    * writes go through the GenServer: a MapSet of local roles per scope,
      `:ets.insert/2` of the pairs, `:ets.delete_object/2` per role followed by
      a lookup, node removal with `:ets.match_delete/2` on both key shapes.

  Remote data is loaded through `load/3` (as a `{:new_roles, ...}` broadcast
  would be applied by the server).
  """
  use GenServer

  @bag :bench_b051_roles
  @set :bench_b051_nodes

  def start_link, do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  ## Reads (in the caller, as 0.5.1)

  def get_nodes(role, scope \\ nil) do
    for {_, n} <- :ets.lookup(@bag, {:scope, s(scope), :role, role}), do: n
  end

  def get_roles(node, scope \\ nil) do
    for {_, r} <- :ets.lookup(@bag, {:scope, s(scope), :node, node}), do: r
  end

  def all_nodes(scope \\ nil), do: :ets.select(@set, [{{{:scope, s(scope), :"$1"}}, [], [:"$1"]}])

  def get_my_roles(scope \\ nil), do: GenServer.call(__MODULE__, {:get_my_roles, s(scope)})

  ## Writes (through the server)

  def add_role(role, scope \\ nil), do: GenServer.call(__MODULE__, {:add, s(scope), [role]})

  def add_roles(roles, scope \\ nil),
    do: GenServer.call(__MODULE__, {:add, s(scope), roles}, :infinity)

  def remove_role(role, scope \\ nil), do: GenServer.call(__MODULE__, {:remove, s(scope), [role]})

  @doc "Applies a remote node's roles, as a `{:new_roles, scope, roles, node}` broadcast."
  def load(scope, node, roles),
    do: GenServer.call(__MODULE__, {:remote, scope, node, roles}, :infinity)

  @doc "Drops `node` from every scope, as on `:nodedown`."
  def remove_node(node), do: GenServer.call(__MODULE__, {:remove_node, node}, :infinity)

  defp s(nil), do: Application.get_env(:cluster_helper, :scope, ClusterHelper)
  defp s(scope) when is_atom(scope), do: scope

  ## Server

  @impl true
  def init(_) do
    :ets.new(@bag, [
      :bag,
      :protected,
      :named_table,
      :compressed,
      read_concurrency: true,
      write_concurrency: true
    ])

    :ets.new(@set, [
      :set,
      :protected,
      :named_table,
      read_concurrency: true,
      write_concurrency: true
    ])

    {:ok, %{mine: %{}, gen: %{}}}
  end

  @impl true
  def handle_call({:get_my_roles, scope}, _from, st),
    do: {:reply, MapSet.to_list(Map.get(st.mine, scope, MapSet.new())), st}

  def handle_call({:add, scope, roles}, _from, st) do
    mine = Map.get(st.mine, scope, MapSet.new())
    new = Enum.reject(roles, &MapSet.member?(mine, &1))

    if new == [] do
      {:reply, :ok, st}
    else
      insert(scope, node(), new)
      mine = Enum.reduce(new, mine, &MapSet.put(&2, &1))
      # 0.5.1 would now send {:new_roles, scope, new, node()} to the :pg members (none here).
      {:reply, :ok,
       %{st | mine: Map.put(st.mine, scope, mine), gen: Map.update(st.gen, scope, 1, &(&1 + 1))}}
    end
  end

  def handle_call({:remove, scope, roles}, _from, st) do
    mine = Map.get(st.mine, scope, MapSet.new())
    gone = Enum.filter(roles, &MapSet.member?(mine, &1))
    me = node()

    Enum.each(gone, fn r ->
      :ets.delete_object(@bag, {{:scope, scope, :role, r}, me})
      :ets.delete_object(@bag, {{:scope, scope, :node, me}, r})
    end)

    if gone != [] and :ets.lookup(@bag, {:scope, scope, :node, me}) == [] do
      :ets.delete(@set, {:scope, scope, me})
    end

    mine = Enum.reduce(gone, mine, &MapSet.delete(&2, &1))

    {:reply, :ok,
     %{st | mine: Map.put(st.mine, scope, mine), gen: Map.update(st.gen, scope, 1, &(&1 + 1))}}
  end

  def handle_call({:remote, scope, node, roles}, _from, st) do
    insert(scope, node, roles)
    {:reply, :ok, st}
  end

  def handle_call({:remove_node, node}, _from, st) do
    :ets.match_delete(@bag, {{:scope, :_, :role, :_}, node})
    :ets.match_delete(@bag, {{:scope, :_, :node, node}, :_})
    :ets.match_delete(@set, {{:scope, :_, node}})
    {:reply, :ok, st}
  end

  defp insert(scope, node, roles) do
    pairs =
      Enum.flat_map(roles, fn r ->
        [{{:scope, scope, :role, r}, node}, {{:scope, scope, :node, node}, r}]
      end)

    :ets.insert(@bag, pairs)
    :ets.insert(@set, {{:scope, scope, node}})
  end
end
