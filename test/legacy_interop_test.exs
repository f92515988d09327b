defmodule ClusterHelper.LegacyInteropTest do
  # Our nodes and ClusterHelper 0.5.1 nodes (the stand-in of
  # test/legacy/cluster_helper_051.ex, on :peer nodes without our code) in one
  # cluster, both ways.
  use ExUnit.Case, async: false

  import ClusterHelper.Test.Cluster, only: [ch: 2, ch: 3, wait_until: 1, wait_until: 2]

  alias ClusterHelper.Test.{App, Cluster}

  @moduletag :multi_node
  @moduletag :legacy
  @moduletag timeout: 120_000

  setup do
    App.restart()
    on_exit(fn -> App.restart() end)
  end

  defp sorted(list), do: Enum.sort(list)

  test "the stand-in is a 0.5.1 node: its modules are not ours" do
    l = Cluster.start_legacy("leg_only", roles: [:x])
    refute :erpc.call(l, Code, :ensure_loaded?, [ClusterHelper.Native])
    assert ch(l, :get_my_roles) == [:x]
  end

  test "initial sync both ways, then live changes both ways" do
    l =
      Cluster.start_legacy("leg_a", scope: :lg, roles: [:legacy_role, "both"], pull_interval: 300)

    o = Cluster.start_node("ours_a", scope: :lg, roles: [:our_role, "both"], pull_interval: 300)

    wait_until(fn -> ch(o, :get_nodes, [:legacy_role]) == [l] end)
    wait_until(fn -> ch(l, :get_nodes, [:our_role]) == [o] end)
    assert sorted(ch(o, :get_nodes, ["both"])) == sorted([l, o])
    wait_until(fn -> sorted(ch(l, :get_nodes, ["both"])) == sorted([l, o]) end)

    # 0.5.1 -> ours: {:new_roles, ...} / {:remove_roles, ...} broadcasts.
    :ok = ch(l, :add_roles, [[:l_live, {:t, 1}]])
    wait_until(fn -> ch(o, :get_nodes, [{:t, 1}]) == [l] end, 1_000)
    :ok = ch(l, :remove_role, [:l_live])
    wait_until(fn -> ch(o, :get_nodes, [:l_live]) == [] end, 1_000)

    # ours -> 0.5.1: the same shapes, to its :all_nodes pid.
    :ok = ch(o, :add_roles, [[:o_live, 2.0]])
    wait_until(fn -> ch(l, :get_nodes, [2.0]) == [o] end, 1_000)
    :ok = ch(o, :remove_role, [:o_live])
    wait_until(fn -> ch(l, :get_nodes, [:o_live]) == [] end, 1_000)
    assert sorted(ch(l, :get_roles, [o])) == sorted([:our_role, "both", 2.0])
  end

  test "we answer the three 0.5.1 erpc functions" do
    o = Cluster.start_node("ours_rpc", roles: [:r1, :r2], scopes: [ClusterHelper, :extra])
    assert sorted(:erpc.call(o, ClusterHelper, :get_my_roles, [ClusterHelper])) == [:r1, :r2]
    assert :erpc.call(o, ClusterHelper, :get_my_roles, [:extra]) == []
    assert :erpc.call(o, ClusterHelper.NodeConfig, :__get_generation__, [ClusterHelper]) == 1
    assert :erpc.call(o, ClusterHelper.NodeConfig, :__get_generation__, [:nope]) == 0

    assert sorted(:erpc.call(o, ClusterHelper.NodeConfig, :__get_scopes__, [])) == [
             ClusterHelper,
             :extra
           ]

    # and we are in :all_nodes of each scope, where 0.5.1 broadcasts
    assert [pid] = :erpc.call(o, :pg, :get_local_members, [:extra, :all_nodes])
    assert pid == :erpc.call(o, Process, :whereis, [ClusterHelper.NodeConfig])
  end

  test "the periodic generation pull repairs what a lost broadcast missed" do
    l = Cluster.start_legacy("leg_rep", scope: :rep, roles: [:l0], pull_interval: 300)
    o = Cluster.start_node("ours_rep", scope: :rep, roles: [:o0], pull_interval: 300)
    wait_until(fn -> ch(o, :get_nodes, [:l0]) == [l] end)
    wait_until(fn -> ch(l, :get_nodes, [:o0]) == [o] end)

    # A lost broadcast: the stand-in gains a role and bumps its generation
    # without telling anyone. Only the generation-based pull can bring it.
    lose_broadcast = """
    :sys.replace_state(ClusterHelper.NodeConfig, fn s ->
      %{s | mine: Map.update!(s.mine, :rep, &(&1 ++ [:silent])),
            gens: Map.update!(s.gens, :rep, &(&1 + 1))}
    end)
    :ok
    """

    {:ok, _} = :erpc.call(l, Code, :eval_string, [lose_broadcast])
    wait_until(fn -> ch(o, :get_nodes, [:silent]) == [l] end)
  end

  test "leave_scope on a 0.5.1 node is seen at our next pull; we leave, it notices" do
    l = Cluster.start_legacy("leg_lv", scope: :lv, roles: [:l1], pull_interval: 300)
    o = Cluster.start_node("ours_lv", scope: :lv, roles: [:o1], pull_interval: 300)
    wait_until(fn -> ch(o, :get_nodes, [:l1]) == [l] end)
    wait_until(fn -> ch(l, :get_nodes, [:o1]) == [o] end)

    :ok = ch(l, :leave_scope, [:lv])
    wait_until(fn -> ch(o, :get_nodes, [:l1]) == [] end)
    assert ch(o, :all_nodes) == [o]

    :ok = ch(l, :join_scope, [:lv])
    :ok = ch(l, :add_role, [:l2])
    wait_until(fn -> ch(o, :get_nodes, [:l2]) == [l] end)

    :ok = ch(o, :leave_scope, [:lv])
    wait_until(fn -> ch(l, :get_nodes, [:o1]) == [] end)
  end

  test "nodedown both ways, with two 0.5.1 nodes and one of ours" do
    l1 = Cluster.start_legacy("leg_nd1", scope: :nd, roles: [:l1], pull_interval: 300)
    l2 = Cluster.start_legacy("leg_nd2", scope: :nd, roles: [:l2], pull_interval: 300)
    o = Cluster.start_node("ours_nd", scope: :nd, roles: [:o], pull_interval: 300)
    true = :erpc.call(l1, :net_kernel, :connect_node, [l2])

    wait_until(fn -> sorted(ch(o, :all_nodes)) == sorted([l1, l2, o]) end)
    wait_until(fn -> sorted(ch(l1, :all_nodes)) == sorted([l1, l2, o]) end)

    Cluster.stop(l2)
    wait_until(fn -> ch(o, :get_nodes, [:l2]) == [] end)
    Cluster.stop(o)
    wait_until(fn -> ch(l1, :all_nodes) == [l1] end)
  end

  test "the test node (ours) and a 0.5.1 node in the default scope" do
    :ok = ClusterHelper.add_role(:tn)
    l = Cluster.start_legacy("leg_tn", roles: [:leg])
    wait_until(fn -> ClusterHelper.get_nodes(:leg) == [l] end)
    wait_until(fn -> ch(l, :get_nodes, [:tn]) == [node()] end)
    assert ch(l, :get_my_roles) == [:leg]
  end
end
