defmodule ClusterHelper.Test.App do
  @moduledoc """
  Restarts the local :cluster_helper application with a given config
  (test support only). Tests that change config call `restart/1` and put the
  defaults back with `restart/0` in `on_exit`.
  """

  @keys [:roles, :scopes, :scope, :pull_timeout, :pull_interval, :event_handler]

  @doc "Stops the app, replaces every ClusterHelper config key by `env`, starts it."
  def restart(env \\ []) do
    _ = Application.stop(:cluster_helper)
    for key <- @keys, do: Application.delete_env(:cluster_helper, key)
    for {key, value} <- env, do: Application.put_env(:cluster_helper, key, value)
    {:ok, _} = Application.ensure_all_started(:cluster_helper)
    :ok
  end
end

defmodule ClusterHelper.Test.Recorder do
  @moduledoc """
  An event handler that sends every event to the process named by `sink/1`
  (on any node) as `{:recorded, node(), event}` (test support only).
  """
  @behaviour ClusterHelper.EventHandler

  @doc "Events of this node go to `pid` from now on."
  def sink(pid), do: :persistent_term.put(__MODULE__, pid)

  @impl true
  def on_role_added(node, role), do: note({:role_added, node, role})
  @impl true
  def on_role_removed(node, role), do: note({:role_removed, node, role})
  @impl true
  def on_node_added(node), do: note({:node_added, node})
  @impl true
  def on_node_removed(node), do: note({:node_removed, node})

  defp note(event) do
    case :persistent_term.get(__MODULE__, nil) do
      nil -> :ok
      pid -> send(pid, {:recorded, node(), event})
    end
  end
end

defmodule ClusterHelper.Test.FaultyHandler do
  @moduledoc "An event handler that fails in every way it can (test support only)."
  @behaviour ClusterHelper.EventHandler

  @impl true
  def on_role_added(_node, _role), do: raise("boom from on_role_added")
  @impl true
  def on_role_removed(_node, _role), do: throw(:thrown_from_on_role_removed)
  @impl true
  def on_node_added(_node), do: exit(:exit_from_on_node_added)
  @impl true
  def on_node_removed(_node), do: :erlang.error(:badarith)
end

defmodule ClusterHelper.Test.PartialHandler do
  @moduledoc "Implements only on_role_added (test support only)."
  @behaviour ClusterHelper.EventHandler

  @impl true
  def on_role_added(node, role), do: ClusterHelper.Test.Recorder.on_role_added(node, role)
end
