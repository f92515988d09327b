defmodule ClusterHelper do
  @moduledoc """
  Role-based node tracking for Erlang/Elixir clusters.

  Every node gives itself *roles* (any term: `:web`, `"db"`, `{:shard, 3}`)
  and every node can ask which nodes hold a role, or which roles a node holds.
  Roles live in *scopes*: independent namespaces, each an atom. A node may
  join several scopes; what happens in one is invisible in the others.

  This is a drop-in rebuild of ClusterHelper 0.5.1: same functions, same
  config, same events, and the same wire protocol, so it runs in one cluster
  with 0.5.1 nodes and with Rust nodes. The index and the sync engine are
  Rust (a NIF); reads never go through a process.

  ## Quick start

      # config/config.exs
      config :cluster_helper, roles: [:web]

      # on any node of the cluster
      ClusterHelper.get_nodes(:web)
      #=> [:"a@10.0.0.1", :"b@10.0.0.2"]

  At run time:

      iex> ClusterHelper.add_role(:quick_start)
      :ok
      iex> ClusterHelper.get_nodes(:quick_start) == [node()]
      true
      iex> ClusterHelper.remove_role(:quick_start)
      :ok
      iex> ClusterHelper.get_nodes(:quick_start)
      []

  ## Scopes

  Functions that take a scope take it as their last, optional argument;
  omitted (or `nil`) it means the default scope: `ClusterHelper`, unless
  `config :cluster_helper, scope: MyScope` says otherwise. Adding a role in a
  scope joins it. Each scope runs its own `:pg` scope process.

  ## Configuration

      config :cluster_helper,
        roles: [:web, :api],          # roles of this node in the default scope ([])
        scopes: [ClusterHelper, :ops], # scopes joined at start (nil: the default scope)
        scope: ClusterHelper,          # the default scope
        pull_timeout: 5_000,           # ms, erpc timeout when pulling a node's roles
        pull_interval: 7_000,          # ms, period of the repair sync
        event_handler: MyApp.Events    # a ClusterHelper.EventHandler (nil)

  `roles`, `scopes` and `scope` are read when the application starts;
  `pull_timeout`, `pull_interval` and `event_handler` when they are used, so
  `Application.put_env/3` changes them at run time.

  ## Sync

  A change is sent at once to every node of the scope. Every `pull_interval`
  each node checks the others' generations (a counter per node and scope,
  bumped by each real change) and pulls what it missed. A node that goes down
  disappears from every scope on every node.

  ## Events

  See `ClusterHelper.EventHandler`: `on_role_added/2`, `on_role_removed/2`,
  `on_node_added/1`, `on_node_removed/1`, once per real change.

  ## Errors

  A scope that is not an atom, a `roles` that is not a list or a node that is
  not an atom raise `ArgumentError`. Roles may be any term; they compare with
  `===`, so `1` and `1.0` are two roles.
  """

  alias ClusterHelper.{Native, NodeConfig}

  @typedoc "A role: any term. Roles compare with `===` (`1` and `1.0` differ)."
  @type role :: term()

  @typedoc "A scope: an atom naming an independent set of roles (and a `:pg` scope)."
  @type scope :: atom()

  @typedoc "A node name, as `node()` returns it."
  @type node_name :: node()

  ## Writes (through ClusterHelper.NodeConfig)

  @doc """
  Gives the local node `role` in `scope` and tells the cluster. Joins `scope`
  if needed. Adding a role the node has already changes nothing.

      iex> ClusterHelper.add_role({:shard, 1})
      :ok
      iex> {:shard, 1} in ClusterHelper.get_my_roles()
      true
      iex> ClusterHelper.add_role(:db, :doc_scope_add)
      :ok
      iex> ClusterHelper.get_my_roles(:doc_scope_add)
      [:db]
      iex> ClusterHelper.remove_role({:shard, 1})
      :ok
      iex> ClusterHelper.leave_scope(:doc_scope_add)
      :ok
  """
  @spec add_role(role(), scope() | nil) :: :ok
  def add_role(role, scope \\ nil), do: NodeConfig.call({:add_roles, scope!(scope), [role]})

  @doc """
  Gives the local node every role of `roles` in `scope`, as `add_role/2`.

      iex> ClusterHelper.add_roles([:a, "b", 3], :doc_scope_adds)
      :ok
      iex> Enum.sort(ClusterHelper.get_my_roles(:doc_scope_adds))
      [3, :a, "b"]
      iex> ClusterHelper.leave_scope(:doc_scope_adds)
      :ok
  """
  @spec add_roles([role()], scope() | nil) :: :ok
  def add_roles(roles, scope \\ nil),
    do: NodeConfig.call({:add_roles, scope!(scope), list!(roles, "roles")})

  @doc """
  Takes `role` away from the local node in `scope` and tells the cluster.
  Removing a role the node does not have changes nothing.

      iex> ClusterHelper.add_role(:doc_remove)
      :ok
      iex> ClusterHelper.remove_role(:doc_remove)
      :ok
      iex> :doc_remove in ClusterHelper.get_my_roles()
      false
      iex> ClusterHelper.remove_role(:never_added)
      :ok
  """
  @spec remove_role(role(), scope() | nil) :: :ok
  def remove_role(role, scope \\ nil), do: NodeConfig.call({:remove_roles, scope!(scope), [role]})

  @doc """
  Takes every role of `roles` away from the local node in `scope`.

      iex> ClusterHelper.add_roles([:r1, :r2, :r3], :doc_scope_removes)
      :ok
      iex> ClusterHelper.remove_roles([:r1, :r3], :doc_scope_removes)
      :ok
      iex> ClusterHelper.get_my_roles(:doc_scope_removes)
      [:r2]
      iex> ClusterHelper.leave_scope(:doc_scope_removes)
      :ok
  """
  @spec remove_roles([role()], scope() | nil) :: :ok
  def remove_roles(roles, scope \\ nil),
    do: NodeConfig.call({:remove_roles, scope!(scope), list!(roles, "roles")})

  @doc """
  Joins `scope`: this node starts hearing and telling roles there.

      iex> ClusterHelper.join_scope(:doc_join)
      :ok
      iex> ClusterHelper.join_scope(:doc_join)
      {:error, :already_joined}
      iex> :doc_join in ClusterHelper.list_scopes()
      true
      iex> ClusterHelper.leave_scope(:doc_join)
      :ok
  """
  @spec join_scope(scope()) :: :ok | {:error, :already_joined}
  def join_scope(scope), do: NodeConfig.call({:join_scope, named_scope!(scope)})

  @doc """
  Leaves `scope`: drops the local roles there and forgets the scope's index.
  Other nodes notice at once (our nodes) or at their next pull (0.5.1 nodes).

      iex> ClusterHelper.add_role(:doc_leaving, :doc_leave)
      :ok
      iex> ClusterHelper.leave_scope(:doc_leave)
      :ok
      iex> ClusterHelper.leave_scope(:doc_leave)
      {:error, :not_joined}
      iex> ClusterHelper.get_nodes(:doc_leaving, :doc_leave)
      []
  """
  @spec leave_scope(scope()) :: :ok | {:error, :not_joined}
  def leave_scope(scope), do: NodeConfig.call({:leave_scope, named_scope!(scope)})

  ## Reads (straight to the NIF: no process involved)

  @doc """
  Nodes that hold `role` in `scope`, the local node included.

      iex> ClusterHelper.add_role("doc_get_nodes")
      :ok
      iex> ClusterHelper.get_nodes("doc_get_nodes") == [node()]
      true
      iex> ClusterHelper.get_nodes(:nobody_has_this)
      []
      iex> ClusterHelper.remove_role("doc_get_nodes")
      :ok
  """
  @spec get_nodes(role(), scope() | nil) :: [node_name()]
  def get_nodes(role, scope \\ nil) do
    {res, scope} = read(scope)

    case Native.get_nodes(res, scope, role) do
      :too_big -> Native.get_nodes_dirty(res, scope, role)
      nodes -> nodes
    end
  end

  @doc """
  Roles that `node` holds in `scope`.

      iex> ClusterHelper.add_role(:doc_get_roles, :doc_scope_roles)
      :ok
      iex> ClusterHelper.get_roles(node(), :doc_scope_roles)
      [:doc_get_roles]
      iex> ClusterHelper.get_roles(:"unknown@nowhere")
      []
      iex> ClusterHelper.leave_scope(:doc_scope_roles)
      :ok
  """
  @spec get_roles(node_name(), scope() | nil) :: [role()]
  def get_roles(node, scope \\ nil) do
    node = node!(node)
    {res, scope} = read(scope)

    case Native.get_roles(res, scope, node) do
      :too_big -> Native.get_roles_dirty(res, scope, node)
      roles -> roles
    end
  end

  @doc """
  Nodes that hold at least one role in `scope`.

      iex> ClusterHelper.all_nodes(:doc_scope_nobody)
      []
      iex> ClusterHelper.add_role(:any, :doc_scope_all)
      :ok
      iex> ClusterHelper.all_nodes(:doc_scope_all) == [node()]
      true
      iex> ClusterHelper.leave_scope(:doc_scope_all)
      :ok
  """
  @spec all_nodes(scope() | nil) :: [node_name()]
  def all_nodes(scope \\ nil) do
    {res, scope} = read(scope)

    case Native.all_nodes(res, scope) do
      :too_big -> Native.all_nodes_dirty(res, scope)
      nodes -> nodes
    end
  end

  @doc """
  Roles of the local node in `scope` (what other nodes pull from it).

      iex> ClusterHelper.get_my_roles(:doc_scope_mine)
      []
      iex> ClusterHelper.add_roles([1, 1.0], :doc_scope_mine)
      :ok
      iex> length(ClusterHelper.get_my_roles(:doc_scope_mine))
      2
      iex> ClusterHelper.leave_scope(:doc_scope_mine)
      :ok
  """
  @spec get_my_roles(scope() | nil) :: [role()]
  def get_my_roles(scope \\ nil) do
    {res, scope} = read(scope)

    case Native.get_my_roles(res, scope) do
      :too_big -> Native.get_my_roles_dirty(res, scope)
      roles -> roles
    end
  end

  @doc """
  Scopes the local node has joined.

      iex> ClusterHelper.join_scope(:doc_list)
      :ok
      iex> :doc_list in ClusterHelper.list_scopes()
      true
      iex> ClusterHelper.leave_scope(:doc_list)
      :ok
      iex> :doc_list in ClusterHelper.list_scopes()
      false
  """
  @spec list_scopes() :: [scope()]
  def list_scopes do
    {res, _, _} = ClusterHelper.Application.state()
    Native.list_scopes(res)
  end

  @doc """
  Whether `node` is the local node.

      iex> ClusterHelper.local_node?(node())
      true
      iex> ClusterHelper.local_node?(:"other@host")
      false
  """
  @spec local_node?(node_name()) :: boolean()
  def local_node?(node), do: node!(node) == node()

  ## Argument checks

  defp read(scope) do
    {res, default, _} = ClusterHelper.Application.state()
    {res, scope!(scope, default)}
  end

  defp scope!(scope) do
    {_, default, _} = ClusterHelper.Application.state()
    scope!(scope, default)
  end

  defp scope!(nil, default), do: default
  defp scope!(scope, _) when is_atom(scope), do: scope

  defp scope!(scope, _),
    do: raise(ArgumentError, "scope must be an atom, got: #{inspect(scope)}")

  defp named_scope!(scope) when is_atom(scope) and scope != nil, do: scope

  defp named_scope!(scope),
    do: raise(ArgumentError, "scope must be a non-nil atom, got: #{inspect(scope)}")

  defp node!(node) when is_atom(node), do: node
  defp node!(node), do: raise(ArgumentError, "node must be an atom, got: #{inspect(node)}")

  defp list!(list, name) do
    _ = length(list)
    list
  rescue
    ArgumentError ->
      reraise ArgumentError,
              "#{name} must be a list, got: #{inspect(list)}",
              __STACKTRACE__
  end
end
