defmodule ClusterHelper.MultiNodeTest do
  # Three real nodes (:peer) running our app. Each test uses scopes of its
  # own, so the test node (also in the cluster) never gets in the way.
  use ExUnit.Case, async: false

  import ClusterHelper.Test.Cluster, only: [ch: 3, wait_until: 1, wait_until: 2]

  alias ClusterHelper.Test.{App, Cluster}

  @moduletag :multi_node
  @moduletag timeout: 120_000

  setup do
    App.restart()
    on_exit(fn -> App.restart() end)
  end

  defp sorted(list), do: Enum.sort(list)

  test "initial sync both ways" do
    a =
      Cluster.start_node("init_a",
        scope: :init_sync,
        roles: [:a_role, "shared"],
        pull_interval: 300
      )

    b =
      Cluster.start_node("init_b",
        scope: :init_sync,
        roles: [:b_role, "shared"],
        pull_interval: 300
      )

    c = Cluster.start_node("init_c", scope: :init_sync, roles: [{:c, 1}], pull_interval: 300)
    nodes = sorted([a, b, c])

    for n <- nodes do
      wait_until(fn -> sorted(ch(n, :all_nodes, [:init_sync])) == nodes end)
      wait_until(fn -> sorted(ch(n, :get_nodes, ["shared", :init_sync])) == sorted([a, b]) end)
      assert ch(n, :get_nodes, [:a_role, :init_sync]) == [a]
      assert ch(n, :get_nodes, [{:c, 1}, :init_sync]) == [c]
      assert ch(n, :get_roles, [b, :init_sync]) |> sorted() == sorted([:b_role, "shared"])
    end
  end

  test "live add/remove is seen within 1 s (no help from the periodic pull)" do
    [a, b, c] = for p <- ~w(live_a live_b live_c), do: Cluster.start_node(p, pull_interval: 300)
    for n <- [a, b, c], do: :ok = ch(n, :join_scope, [:live])
    :ok = ch(b, :add_role, [:b_ready, :live])
    for n <- [a, c], do: wait_until(fn -> ch(n, :get_nodes, [:b_ready, :live]) == [b] end)

    # From now on only the messages sent on each change can bring news.
    for n <- [a, b, c],
        do: :ok = :erpc.call(n, Application, :put_env, [:cluster_helper, :pull_interval, 600_000])

    Process.sleep(400)

    :ok = ch(a, :add_roles, [[:new, 1.0, %{m: 1}], :live])
    for n <- [b, c], do: wait_until(fn -> ch(n, :get_nodes, [%{m: 1}, :live]) == [a] end, 1_000)
    assert ch(b, :get_nodes, [1.0, :live]) == [a]
    assert ch(b, :get_nodes, [1, :live]) == []

    :ok = ch(a, :remove_role, [:new, :live])
    for n <- [b, c], do: wait_until(fn -> ch(n, :get_nodes, [:new, :live]) == [] end, 1_000)
    assert ch(c, :get_roles, [a, :live]) |> sorted() == sorted([1.0, %{m: 1}])
  end

  test "overlapping scopes are isolated" do
    a = Cluster.start_node("ov_a", scopes: [:s1, :s2], pull_interval: 300)
    b = Cluster.start_node("ov_b", scopes: [:s1], pull_interval: 300)
    c = Cluster.start_node("ov_c", scopes: [:s2], pull_interval: 300)
    :ok = ch(a, :add_role, [:x, :s1])
    :ok = ch(a, :add_role, [:y, :s2])
    :ok = ch(b, :add_role, [:y, :s1])
    :ok = ch(c, :add_role, [:x, :s2])

    wait_until(fn -> sorted(ch(b, :get_nodes, [:x, :s1])) == [a] end)
    wait_until(fn -> sorted(ch(c, :get_nodes, [:y, :s2])) == [a] end)
    wait_until(fn -> sorted(ch(a, :get_nodes, [:y, :s1])) == [b] end)
    wait_until(fn -> sorted(ch(a, :get_nodes, [:x, :s2])) == [c] end)

    assert ch(a, :get_roles, [a, :s1]) == [:x]
    assert ch(a, :get_roles, [a, :s2]) == [:y]
    assert ch(b, :get_nodes, [:y, :s1]) == [b]
    assert ch(b, :all_nodes, [:s2]) == []
    assert ch(c, :all_nodes, [:s1]) == []
    assert sorted(ch(a, :all_nodes, [:s1])) == sorted([a, b])
    assert sorted(ch(a, :all_nodes, [:s2])) == sorted([a, c])
    assert ch(b, :get_roles, [c, :s1]) == []
  end

  test "join and leave a scope" do
    a = Cluster.start_node("jl_a", pull_interval: 300)
    b = Cluster.start_node("jl_b", pull_interval: 300)
    :ok = ch(a, :add_role, [:in_s3, :s3])
    Process.sleep(200)
    # b joins later: it pulls what is there.
    assert ch(b, :get_nodes, [:in_s3, :s3]) == []
    :ok = ch(b, :join_scope, [:s3])
    wait_until(fn -> ch(b, :get_nodes, [:in_s3, :s3]) == [a] end)
    :ok = ch(b, :add_role, [:b_in_s3, :s3])
    wait_until(fn -> ch(a, :get_nodes, [:b_in_s3, :s3]) == [b] end)

    # a leaves: b drops a from the scope.
    :ok = ch(a, :leave_scope, [:s3])
    wait_until(fn -> ch(b, :all_nodes, [:s3]) == [b] end)
    assert ch(b, :get_roles, [a, :s3]) == []
    assert ch(a, :all_nodes, [:s3]) == []
    # and back
    :ok = ch(a, :join_scope, [:s3])
    wait_until(fn -> ch(a, :get_nodes, [:b_in_s3, :s3]) == [b] end)
  end

  test "nodedown removes a node's roles everywhere" do
    a = Cluster.start_node("nd_a", scope: :nd, pull_interval: 300)
    b = Cluster.start_node("nd_b", scope: :nd, pull_interval: 300)
    c = Cluster.start_node("nd_c", scope: :nd, roles: [:c_only, :common], pull_interval: 300)
    :ok = ch(a, :add_role, [:common])
    :ok = ch(c, :add_role, [:other, :nd2])
    :ok = ch(a, :join_scope, [:nd2])
    :ok = ch(b, :join_scope, [:nd2])

    for n <- [a, b] do
      wait_until(fn -> ch(n, :get_nodes, [:c_only, :nd]) == [c] end)
      wait_until(fn -> ch(n, :get_nodes, [:other, :nd2]) == [c] end)
    end

    Cluster.stop(c)

    for n <- [a, b] do
      wait_until(fn -> ch(n, :get_nodes, [:c_only, :nd]) == [] end)
      wait_until(fn -> ch(n, :get_nodes, [:other, :nd2]) == [] end)
      assert ch(n, :get_nodes, [:common, :nd]) == [a]
      assert ch(n, :get_roles, [c, :nd]) == []
      refute c in ch(n, :all_nodes, [:nd])
    end
  end

  test "a killed driver loses nothing the cluster sees, and carries on" do
    a = Cluster.start_node("kd_a", scope: :kd, roles: [:a1], pull_interval: 300)
    b = Cluster.start_node("kd_b", scope: :kd, roles: [:b1], pull_interval: 300)
    wait_until(fn -> ch(b, :get_nodes, [:a1, :kd]) == [a] end)
    wait_until(fn -> ch(a, :get_nodes, [:b1, :kd]) == [b] end)

    old = :erpc.call(a, Process, :whereis, [ClusterHelper.NodeConfig])
    true = :erpc.call(a, Process, :exit, [old, :kill])
    assert ch(a, :get_nodes, [:b1, :kd]) == [b]

    wait_until(fn ->
      pid = :erpc.call(a, Process, :whereis, [ClusterHelper.NodeConfig])
      is_pid(pid) and pid != old
    end)

    assert ch(b, :get_nodes, [:a1, :kd]) == [a]
    :ok = ch(a, :add_role, [:a2, :kd])
    wait_until(fn -> ch(b, :get_nodes, [:a2, :kd]) == [a] end, 1_000)
    :ok = ch(b, :add_role, [:b2, :kd])
    wait_until(fn -> ch(a, :get_nodes, [:b2, :kd]) == [b] end, 1_000)
    # A node that joins after the restart is seen by the restarted driver.
    c = Cluster.start_node("kd_c", scope: :kd, roles: [:c1], pull_interval: 300)
    wait_until(fn -> ch(a, :get_nodes, [:c1, :kd]) == [c] end)
    wait_until(fn -> ch(c, :get_nodes, [:a2, :kd]) == [a] end)
  end

  test "the test node itself syncs with peers in the default scope" do
    ClusterHelper.add_role(:from_test_node)
    a = Cluster.start_node("tn_a", roles: [:from_peer], pull_interval: 300)
    wait_until(fn -> ClusterHelper.get_nodes(:from_peer) == [a] end)
    wait_until(fn -> ch(a, :get_nodes, [:from_test_node, ClusterHelper]) == [node()] end)
  end

  test "roles of every term type cross the wire and land in the same slot" do
    a = Cluster.start_node("ty_a", scope: :types, pull_interval: 300)
    b = Cluster.start_node("ty_b", scope: :types, pull_interval: 300)
    l = Cluster.start_legacy("ty_l", scope: :types, pull_interval: 300)

    roles = [
      :atom,
      :ünïcödé,
      "string",
      ~c"charlist",
      [1, 2, 3],
      255,
      256,
      -1,
      2 ** 64,
      -(2 ** 70),
      1.0,
      -0.5,
      {:t, [], %{}},
      %{b: 2, a: [1.5]},
      <<0, 255>>,
      self(),
      make_ref()
    ]

    # A 0.5.1 node reads a peer's roles before its generation when it pulls:
    # a change landing between the two reads leaves it stale until the next
    # change (0.5.1's own race; the stand-in reproduces it). So let the
    # initial pulls finish before changing anything.
    for n <- [a, b, l],
        do:
          wait_until(fn -> length(:erpc.call(n, :pg, :get_members, [:types, :all_nodes])) == 3 end)

    Process.sleep(1_000)
    :ok = ch(a, :add_roles, [roles])

    for n <- [b, l] do
      missing = fn -> Enum.reject(roles, &(ch(n, :get_nodes, [&1]) == [a])) end

      try do
        wait_until(fn -> missing.() == [] end)
      rescue
        e in ExUnit.AssertionError ->
          reraise ExUnit.AssertionError,
                  [
                    message:
                      "#{n} never saw #{inspect(missing.())} of #{a} " <>
                        "(#{n} is connected to #{inspect(ch_nodes(n))}): #{e.message}"
                  ],
                  __STACKTRACE__
      end
    end

    # 1.0 is not 1; the map found whatever order it is built in
    assert ch(b, :get_nodes, [1]) == []
    assert ch(b, :get_nodes, [Map.new(a: [1.5], b: 2)]) == [a]
    assert length(ch(b, :get_roles, [a])) == length(roles)
    # and back from the 0.5.1 node, by its broadcast and our pull
    :ok = ch(l, :add_roles, [[2.0, {:from, "legacy"}, [a: 1]]])

    for role <- [2.0, {:from, "legacy"}, [a: 1]],
        do: wait_until(fn -> ch(b, :get_nodes, [role]) == [l] end)
  end

  defp ch_nodes(n), do: :erpc.call(n, Node, :list, [])
end
