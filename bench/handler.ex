defmodule Bench.Handler do
  @moduledoc false
  # Event handler of our Elixir nodes in the multi-node benchmarks: stamps every
  # event with :os.system_time(:microsecond) in a public ETS table.
  @behaviour ClusterHelper.EventHandler

  def setup, do: :ets.new(:bench_events, [:public, :named_table, :set])

  @impl true
  def on_role_added(node, role), do: stamp({:added, node, role})
  @impl true
  def on_role_removed(node, role), do: stamp({:removed, node, role})
  @impl true
  def on_node_added(node), do: stamp({:node_added, node})
  @impl true
  def on_node_removed(node), do: stamp({:node_removed, node})

  defp stamp(key), do: :ets.insert_new(:bench_events, {key, :os.system_time(:microsecond)})

  @doc "The stamp of an event, or nil."
  def time(key) do
    case :ets.lookup(:bench_events, key) do
      [{_, t}] -> t
      [] -> nil
    end
  end

  @doc "Adds a role; returns the system time (us) just before."
  def timed_add(role) do
    t = :os.system_time(:microsecond)
    :ok = ClusterHelper.add_role(role)
    t
  end

  @doc "Total {node, role} pairs this node knows in the default scope."
  def pairs,
    do: Enum.sum(for n <- ClusterHelper.all_nodes(), do: length(ClusterHelper.get_roles(n)))
end
