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

  # A fake 0.5.1 node whose every answer is steered by :persistent_term.
  @fake """
  defmodule FakePeer do
    def start(scope) do
      {:ok, _} = :pg.start(scope)
      pid = spawn(fn -> Process.sleep(:infinity) end)
      Process.register(pid, ClusterHelper.NodeConfig)
      :ok = :pg.join(scope, :all_nodes, pid)
    end

    def set(key, how), do: :persistent_term.put({__MODULE__, key}, how)

    def behave(key, default) do
      case :persistent_term.get({__MODULE__, key}, :normal) do
        :normal -> default
        {:sleep, ms} -> Process.sleep(ms) && default
        :raise -> raise "fake failure"
        :throw -> throw(:fake_throw)
        :exit -> exit(:fake_exit)
        {:value, value} -> value
      end
    end
  end

  defmodule ClusterHelper.NodeConfig do
    def __get_scopes__, do: FakePeer.behave(:scopes, [:fk])
    def __get_generation__(_scope), do: FakePeer.behave(:generation, 1)
  end

  defmodule ClusterHelper do
    def get_my_roles(_scope), do: FakePeer.behave(:roles, [:fake_role])
  end
  """

  setup do
    on_exit(fn -> App.restart() end)
  end

  defp fake_peer(prefix) do
    peer = Cluster.start_bare(prefix)
    _ = :erpc.call(peer, Code, :compile_string, [@fake])
    :ok = :erpc.call(peer, FakePeer, :start, [:fk])
    peer
  end

  defp set(peer, key, how), do: :ok = :erpc.call(peer, FakePeer, :set, [key, how])

  test "pull_timeout: a pull slower than it fails; raised, it succeeds" do
    App.restart(scopes: [:fk], pull_timeout: 300, pull_interval: 200)
    server = Process.whereis(ClusterHelper.NodeConfig)
    peer = fake_peer("slow")
    set(peer, :roles, {:sleep, 1_000})
    Process.sleep(2_500)
    assert ClusterHelper.get_nodes(:fake_role, :fk) == []

    Application.put_env(:cluster_helper, :pull_timeout, 5_000)
    wait_until(fn -> ClusterHelper.get_nodes(:fake_role, :fk) == [peer] end)
    assert Process.whereis(ClusterHelper.NodeConfig) == server
  end

  test "pulls never pile up, however slow the peer" do
    App.restart(scopes: [:fk], pull_timeout: 5_000, pull_interval: 20)
    peer = fake_peer("pile")
    set(peer, :roles, {:sleep, 1_500})
    set(peer, :generation, {:value, 7})

    max =
      Enum.reduce(1..30, 0, fn _, acc ->
        Process.sleep(50)
        max(acc, length(Task.Supervisor.children(ClusterHelper.TaskSupervisor)))
      end)

    assert max <= 3
    wait_until(fn -> ClusterHelper.get_nodes(:fake_role, :fk) == [peer] end)
  end

  test "every kind of erpc failure is survived, then repaired" do
    App.restart(scopes: [:fk], pull_interval: 100)
    server = Process.whereis(ClusterHelper.NodeConfig)

    capture_log(fn ->
      peer = fake_peer("failing")

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
