defmodule ClusterHelper.Application do
  @moduledoc false
  # Owns the NIF resource and the supervision tree.
  #
  # The resource (index, local roles, sync engine) is made here, once per
  # application start, and kept in :persistent_term with the default scope, so
  # reads reach it without any process and it outlives the driver: killing
  # ClusterHelper.NodeConfig loses nothing. Children, in start order:
  #
  #   ClusterHelper.ScopeSupervisor  DynamicSupervisor of the :pg scope processes
  #   ClusterHelper.TaskSupervisor   erpc pulls and asks, one task each
  #   ClusterHelper.NodeConfig       the driver (GenServer)

  use Application

  alias ClusterHelper.Native

  @key ClusterHelper.State

  @impl true
  def start(_type, _args) do
    scope = Application.get_env(:cluster_helper, :scope, ClusterHelper)

    unless is_atom(scope) and scope != nil do
      raise ArgumentError,
            "config :cluster_helper, :scope must be a non-nil atom, got: #{inspect(scope)}"
    end

    res = Native.new(Node.self(), System.os_time(:microsecond))
    # Set to 1 by the first driver that applies the :roles / :scopes config, so
    # a restarted driver does not re-add roles removed since.
    boot = :atomics.new(1, signed: false)
    :persistent_term.put(@key, {res, scope, boot})

    children = [
      {DynamicSupervisor, name: ClusterHelper.ScopeSupervisor, strategy: :one_for_one},
      {Task.Supervisor, name: ClusterHelper.TaskSupervisor},
      ClusterHelper.NodeConfig
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: ClusterHelper.Supervisor)
  end

  @impl true
  def stop(_state) do
    :persistent_term.erase(@key)
    :ok
  end

  @doc false
  # {resource, default scope, boot flag}; raises when the app is not running.
  @spec state() :: {reference(), atom(), :atomics.atomics_ref()}
  def state do
    case :persistent_term.get(@key, nil) do
      nil -> raise RuntimeError, "the :cluster_helper application is not started"
      state -> state
    end
  end
end
