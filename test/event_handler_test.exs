defmodule ClusterHelper.EventHandlerTest do
  # Events: once per real change, none for a no-op, failing handlers contained.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias ClusterHelper.Test.{App, Cluster, Recorder}

  setup do
    Recorder.sink(self())
    App.restart(event_handler: Recorder)
    on_exit(fn -> App.restart() end)
  end

  test "on_role_added / on_role_removed fire once per real change" do
    me = node()
    :ok = ClusterHelper.add_roles([:a, :b])
    assert_receive {:recorded, ^me, {:role_added, ^me, :a}}
    assert_receive {:recorded, ^me, {:role_added, ^me, :b}}

    :ok = ClusterHelper.remove_role(:a)
    assert_receive {:recorded, ^me, {:role_removed, ^me, :a}}
    refute_receive {:recorded, _, {:role_added, _, _}}, 100
  end

  test "no event for a no-op" do
    :ok = ClusterHelper.add_role(:a)
    assert_receive {:recorded, _, {:role_added, _, :a}}
    :ok = ClusterHelper.add_role(:a)
    :ok = ClusterHelper.add_roles([:a, :a])
    :ok = ClusterHelper.remove_role(:never_there)
    :ok = ClusterHelper.remove_roles([])
    refute_receive {:recorded, _, _}, 300
  end

  test "the same role in two scopes is two changes" do
    :ok = ClusterHelper.add_role(:a)
    :ok = ClusterHelper.add_role(:a, :other_scope)
    assert_receive {:recorded, _, {:role_added, _, :a}}
    assert_receive {:recorded, _, {:role_added, _, :a}}
  end

  test "the handler is read when events fire" do
    Application.put_env(:cluster_helper, :event_handler, nil)
    :ok = ClusterHelper.add_role(:silent)
    refute_receive {:recorded, _, _}, 100
    Application.put_env(:cluster_helper, :event_handler, Recorder)
    :ok = ClusterHelper.add_role(:loud)
    assert_receive {:recorded, _, {:role_added, _, :loud}}
  end

  test "optional callbacks: a handler with only on_role_added" do
    Application.put_env(:cluster_helper, :event_handler, ClusterHelper.Test.PartialHandler)
    :ok = ClusterHelper.add_role(:p)
    assert_receive {:recorded, _, {:role_added, _, :p}}
    :ok = ClusterHelper.remove_role(:p)
    refute_receive {:recorded, _, _}, 100
  end

  test "a raising, throwing or exiting handler is logged and does not crash the server" do
    server = Process.whereis(ClusterHelper.NodeConfig)
    Application.put_env(:cluster_helper, :event_handler, ClusterHelper.Test.FaultyHandler)

    log =
      capture_log(fn ->
        assert :ok = ClusterHelper.add_role(:boom)
        assert :ok = ClusterHelper.remove_role(:boom)
      end)

    assert log =~ "boom from on_role_added"
    assert log =~ "thrown_from_on_role_removed"
    assert Process.whereis(ClusterHelper.NodeConfig) == server
    assert ClusterHelper.get_my_roles() == []
    assert :ok = ClusterHelper.add_role(:after)
    assert ClusterHelper.get_my_roles() == [:after]
  end

  test "a handler that is not a module is logged" do
    Application.put_env(:cluster_helper, :event_handler, "not a module")
    log = capture_log(fn -> :ok = ClusterHelper.add_role(:x) end)
    assert log =~ "event_handler"
    assert ClusterHelper.get_my_roles() == [:x]
  end

  @tag :multi_node
  test "on_node_added / on_node_removed, and failing node callbacks" do
    peer = Cluster.start_node("ev", roles: [:peer_role])
    me = node()

    assert_receive {:recorded, ^me, {:node_added, ^peer}}, 10_000
    assert_receive {:recorded, ^me, {:role_added, ^peer, :peer_role}}, 10_000

    Application.put_env(:cluster_helper, :event_handler, ClusterHelper.Test.FaultyHandler)
    server = Process.whereis(ClusterHelper.NodeConfig)
    log = capture_log(fn -> Cluster.stop(peer) && Process.sleep(500) end)
    assert Process.whereis(ClusterHelper.NodeConfig) == server
    assert log =~ "on_node_removed/1 failed"

    Application.put_env(:cluster_helper, :event_handler, Recorder)
    peer2 = Cluster.start_node("ev2", roles: [:r2])
    assert_receive {:recorded, ^me, {:node_added, ^peer2}}, 10_000
    assert_receive {:recorded, ^me, {:role_added, ^peer2, :r2}}, 10_000
    # A periodic sync that finds the same roles fires nothing.
    Cluster.stop(peer2)
    assert_receive {:recorded, ^me, {:role_removed, ^peer2, :r2}}, 10_000
    assert_receive {:recorded, ^me, {:node_removed, ^peer2}}, 10_000
  end

  @tag :multi_node
  test "no duplicate events from periodic pulls" do
    App.restart(event_handler: Recorder, pull_interval: 100)
    peer = Cluster.start_node("dup", roles: [:once], pull_interval: 100)
    assert_receive {:recorded, _, {:role_added, ^peer, :once}}, 10_000
    assert_receive {:recorded, _, {:node_added, ^peer}}, 10_000
    Process.sleep(800)
    refute_received {:recorded, _, {:role_added, ^peer, :once}}
    refute_received {:recorded, _, {:node_added, ^peer}}
  end
end
