defmodule ClusterHelper.ErpcFailuresTest do
  # Our node against peers that answer the 0.5.1 erpc functions badly: slowly,
  # by raising, throwing, exiting, with garbage, or not at all (no module).
  # The driver survives all of it, honours pull_timeout, and repairs when the
  # peer behaves again.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import ClusterHelper.Test.Cluster, only: [wait_until: 1]

  alias ClusterHelper.Test.{App, Cluster}

  @moduletag :multi_node
  @moduletag timeout: 120_000

  setup do
    on_exit(fn -> App.restart() end)
  end

  # The fake answers as `behaviours` says from the start (other keys: normally).
  defp fake_peer(prefix, behaviours) do
    peer = Cluster.start_bare(prefix)
    # before the modules exist, so that no pull can see the default answers
    for {key, how} <- behaviours, do: set(peer, key, how)
    _ = :erpc.call(peer, Code, :compile_string, [ClusterHelper.Test.FakePeer.source()])
    :ok = :erpc.call(peer, FakePeer, :start, [:fk])
    peer
  end

  defp set(peer, key, how),
    do: :ok = :erpc.call(peer, :persistent_term, :put, [{FakePeer, key}, how])

  test "pull_timeout: a pull slower than it fails; raised, it succeeds" do
    App.restart(scopes: [:fk], pull_timeout: 300, pull_interval: 1_000)
    server = Process.whereis(ClusterHelper.NodeConfig)
    peer = fake_peer("slow", roles: {:sleep, 1_000})
    Process.sleep(2_500)
    assert ClusterHelper.get_nodes(:fake_role, :fk) == []

    Application.put_env(:cluster_helper, :pull_timeout, 5_000)
    wait_until(fn -> ClusterHelper.get_nodes(:fake_role, :fk) == [peer] end)
    assert Process.whereis(ClusterHelper.NodeConfig) == server
  end

  test "pulls never pile up, however slow the peer" do
    App.restart(scopes: [:fk], pull_timeout: 5_000, pull_interval: 20)
    peer = fake_peer("pile", roles: {:sleep, 1_500}, generation: {:value, 7})

    max =
      Enum.reduce(1..30, 0, fn _, acc ->
        Process.sleep(50)
        max(acc, length(Task.Supervisor.children(ClusterHelper.TaskSupervisor)))
      end)

    assert max <= 3
    assert peer in Node.list()
  end

  test "a pull slower than three pull intervals still completes" do
    App.restart(scopes: [:fk], pull_timeout: 5_000, pull_interval: 100)
    peer = fake_peer("slowpull", roles: {:sleep, 700})
    wait_until(fn -> ClusterHelper.get_nodes(:fake_role, :fk) == [peer] end)
  end

  test "every kind of erpc failure is survived, then repaired" do
    App.restart(scopes: [:fk], pull_interval: 100)
    server = Process.whereis(ClusterHelper.NodeConfig)

    capture_log(fn ->
      peer = fake_peer("failing", roles: :raise, generation: :raise, scopes: :raise)

      for how <- [:raise, :throw, :exit, {:value, :not_a_list}] do
        set(peer, :roles, how)
        set(peer, :generation, Enum.random([:raise, :throw, :exit, {:value, "x"}, {:value, -1}]))
        set(peer, :scopes, Enum.random([:raise, :throw, :exit, {:value, :nope}, :normal]))
        Process.sleep(400)
        assert ClusterHelper.get_nodes(:fake_role, :fk) == []
        assert Process.whereis(ClusterHelper.NodeConfig) == server
      end

      for key <- [:roles, :generation, :scopes], do: set(peer, key, :normal)
      wait_until(fn -> ClusterHelper.get_nodes(:fake_role, :fk) == [peer] end)
    end)

    assert Process.whereis(ClusterHelper.NodeConfig) == server
  end

  test "a node with no ClusterHelper at all (undef) is harmless" do
    App.restart(pull_interval: 100)
    server = Process.whereis(ClusterHelper.NodeConfig)
    :ok = ClusterHelper.add_role(:here)
    peer = Cluster.start_bare("undef")
    Process.sleep(600)
    assert Process.whereis(ClusterHelper.NodeConfig) == server
    refute peer in ClusterHelper.all_nodes()
    assert ClusterHelper.all_nodes() == [node()]
  end
end
