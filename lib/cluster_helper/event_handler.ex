defmodule ClusterHelper.EventHandler do
  @moduledoc """
  Optional callbacks for cluster changes.

  Implement any of the callbacks in a module and name it in the config:

      config :cluster_helper, event_handler: MyApp.ClusterEvents

  The handler is looked up each time an event fires, so
  `Application.put_env(:cluster_helper, :event_handler, Mod)` takes effect at
  once. Each callback fires once per real change: a periodic sync that finds
  the same roles fires nothing, nor does adding a role a node already has.
  Callbacks run in the `ClusterHelper.NodeConfig` server: keep them short and
  do not call `ClusterHelper` write functions from them. A callback that
  raises, throws or exits is logged; the server carries on.

  ## Example

      defmodule MyApp.ClusterEvents do
        @behaviour ClusterHelper.EventHandler
        require Logger

        @impl true
        def on_role_added(node, role),
          do: Logger.info("\#{node} gained role \#{inspect(role)}")

        @impl true
        def on_node_removed(node), do: Logger.info("\#{node} left")
      end
  """

  require Logger

  @doc "A node (the local one included) gained `role` in a scope."
  @callback on_role_added(node :: node(), role :: ClusterHelper.role()) :: any()

  @doc "A node (the local one included) lost `role` in a scope."
  @callback on_role_removed(node :: node(), role :: ClusterHelper.role()) :: any()

  @doc "A node was discovered in a scope."
  @callback on_node_added(node :: node()) :: any()

  @doc "A node left a scope or went down."
  @callback on_node_removed(node :: node()) :: any()

  @optional_callbacks on_role_added: 2, on_role_removed: 2, on_node_added: 1, on_node_removed: 1

  @doc false
  # Runs the configured callback for one `{:event, ...}` action of the engine.
  @spec dispatch(tuple()) :: :ok
  def dispatch({:event, :role_added, scope, node, role}),
    do: run(:on_role_added, [node, role], scope)

  def dispatch({:event, :role_removed, scope, node, role}),
    do: run(:on_role_removed, [node, role], scope)

  def dispatch({:event, :node_added, scope, node}), do: run(:on_node_added, [node], scope)
  def dispatch({:event, :node_removed, scope, node}), do: run(:on_node_removed, [node], scope)

  def dispatch(other) do
    Logger.warning("ClusterHelper: unknown event #{inspect(other)} ignored")
    :ok
  end

  defp run(callback, args, scope) do
    case Application.get_env(:cluster_helper, :event_handler) do
      nil ->
        :ok

      mod when is_atom(mod) ->
        if Code.ensure_loaded?(mod) and function_exported?(mod, callback, length(args)) do
          invoke(mod, callback, args, scope)
        end

        :ok

      other ->
        Logger.error("ClusterHelper: event_handler must be a module, got #{inspect(other)}")
        :ok
    end
  end

  defp invoke(mod, callback, args, scope) do
    apply(mod, callback, args)
  catch
    kind, reason ->
      Logger.error(
        "ClusterHelper: #{inspect(mod)}.#{callback}/#{length(args)} failed:\n" <>
          Exception.format(kind, reason, __STACKTRACE__),
        scope: scope
      )
  end
end
