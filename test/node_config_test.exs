defmodule ClusterHelper.NodeConfigTest do
  # Single node: the driver's robustness. Nothing is lost when it dies,
  # nothing it does not understand brings it down.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias ClusterHelper.{Native, NodeConfig}
  alias ClusterHelper.Test.{App, Cluster}

  doctest ClusterHelper.NodeConfig

  setup do
    App.restart()
    on_exit(fn -> App.restart() end)
  end

  test "killing the driver loses no local role; reads answer while it is down; it carries on" do
    :ok = ClusterHelper.add_roles([:k1, "k2"])
    :ok = ClusterHelper.add_roles([{:k, 3}], :kill_scope)
    old = Process.whereis(NodeConfig)

    # Hold the supervisor so the driver stays dead while we read.
    :ok = :sys.suspend(ClusterHelper.Supervisor)
    ref = Process.monitor(old)
    Process.exit(old, :kill)
    assert_receive {:DOWN, ^ref, :process, ^old, :killed}
    assert Process.whereis(NodeConfig) == nil

    assert Enum.sort(ClusterHelper.get_my_roles()) == [:k1, "k2"]
    assert ClusterHelper.get_nodes(:k1) == [node()]
    assert ClusterHelper.get_roles(node(), :kill_scope) == [{:k, 3}]
    assert ClusterHelper.all_nodes(:kill_scope) == [node()]
    assert Enum.sort(ClusterHelper.list_scopes()) == [ClusterHelper, :kill_scope]
    assert NodeConfig.__get_generation__(ClusterHelper) == 1

    :ok = :sys.resume(ClusterHelper.Supervisor)
    new = Cluster.wait_until(fn -> Process.whereis(NodeConfig) end)
    assert new != old

    # It re-joined the groups of every joined scope, and carries on.
    for scope <- [ClusterHelper, :kill_scope], group <- [:all_nodes, Native.ours_group()] do
      assert :pg.get_local_members(scope, group) == [new]
    end

    assert Enum.sort(ClusterHelper.get_my_roles()) == [:k1, "k2"]
    assert :ok = ClusterHelper.add_role(:k3)
    assert NodeConfig.__get_generation__(ClusterHelper) == 2
    assert :ok = ClusterHelper.remove_role(:k1)
    assert Enum.sort(ClusterHelper.get_my_roles()) == [:k3, "k2"]
    # The :roles config is not applied again by a restarted driver.
  end

  test "a restarted driver does not re-add config roles removed since" do
    App.restart(roles: [:from_config])
    :ok = ClusterHelper.remove_role(:from_config)
    old = Process.whereis(NodeConfig)
    Process.exit(old, :kill)
    Cluster.wait_until(fn -> (pid = Process.whereis(NodeConfig)) && pid != old end)
    assert ClusterHelper.get_my_roles() == []
  end

  test "writes issued while the driver restarts wait for the new one" do
    old = Process.whereis(NodeConfig)
    Process.exit(old, :kill)
    assert :ok = ClusterHelper.add_role(:during_restart)
    assert ClusterHelper.get_my_roles() == [:during_restart]
  end

  test "a :pg scope that dies is restarted under our supervisor and re-joined" do
    :ok = ClusterHelper.add_role(:r, :fragile)
    scope_pid = Process.whereis(:fragile)
    capture_log(fn -> Process.exit(scope_pid, :kill) end)

    Cluster.wait_until(fn ->
      pid = Process.whereis(NodeConfig)
      new_scope = Process.whereis(:fragile)

      is_pid(pid) and is_pid(new_scope) and new_scope != scope_pid and
        :pg.get_local_members(:fragile, :all_nodes) == [pid]
    end)

    assert ClusterHelper.get_my_roles(:fragile) == [:r]
  end

  test "unknown calls, casts and messages are logged and ignored" do
    server = Process.whereis(NodeConfig)

    log =
      capture_log([level: :warning], fn ->
        Logger.configure(level: :warning)

        try do
          assert GenServer.call(NodeConfig, :what_is_this) == {:error, :unknown_call}
          GenServer.cast(NodeConfig, {:strange, 1})
          send(NodeConfig, :random_message)
          send(NodeConfig, {:DOWN, make_ref(), :process, self(), :normal})
          :sys.get_state(NodeConfig)
        after
          Logger.configure(level: :error)
        end
      end)

    assert log =~ "what_is_this"
    assert log =~ "strange"
    assert log =~ "random_message"
    assert Process.whereis(NodeConfig) == server
  end

  test "malformed protocol messages are dropped, the server lives" do
    server = Process.whereis(NodeConfig)
    :ok = ClusterHelper.add_role(:stays)

    capture_log(fn ->
      for msg <- [
            {:new_roles, ClusterHelper, :not_a_list, :x@y},
            {:new_roles, "scope", [:r], :x@y},
            {:remove_roles, ClusterHelper, [:r], "node"},
            {:new_roles},
            {:remove_roles, 1, 2, 3, 4, 5},
            {:ch_nonsense},
            {:ch_nonsense, make_ref(), self(), %{}},
            {:ch_, 1}
          ] do
        send(NodeConfig, msg)
      end

      :sys.get_state(NodeConfig)
    end)

    assert Process.whereis(NodeConfig) == server
    assert ClusterHelper.get_my_roles() == [:stays]
  end

  test "__get_generation__/1 and __get_scopes__/0 answer from the NIF" do
    assert NodeConfig.__get_generation__(ClusterHelper) == 0
    :ok = ClusterHelper.add_role(:g1)
    :ok = ClusterHelper.add_role(:g1)
    assert NodeConfig.__get_generation__(ClusterHelper) == 1
    :ok = ClusterHelper.remove_role(:g1)
    assert NodeConfig.__get_generation__(ClusterHelper) == 2
    assert NodeConfig.__get_generation__(:not_joined) == 0
    assert NodeConfig.__get_generation__("junk") == 0
    assert NodeConfig.__get_scopes__() == [ClusterHelper]
  end

  test "the NIF rejects wrongly typed arguments with ArgumentError, not a crash" do
    {res, _, _} = ClusterHelper.Application.state()
    assert_raise ArgumentError, fn -> Native.get_nodes(res, "scope", :r) end
    assert_raise ArgumentError, fn -> Native.get_roles(res, ClusterHelper, "node") end
    assert_raise ArgumentError, fn -> Native.all_nodes(:not_a_resource, ClusterHelper) end
    assert_raise ArgumentError, fn -> Native.generation(res, 1) end
  end
end
