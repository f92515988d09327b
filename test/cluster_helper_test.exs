defmodule ClusterHelperTest do
  # Single node: the public API, its defaults, return values and bad input.
  use ExUnit.Case, async: false

  alias ClusterHelper.Test.App

  doctest ClusterHelper

  setup do
    App.restart()
    on_exit(fn -> App.restart() end)
  end

  test "the NIF is built by our compiler, before the Elixir compiler" do
    compilers = Mix.Project.config()[:compilers]

    assert Enum.find_index(compilers, &(&1 == :cluster_helper_nif)) <
             Enum.find_index(compilers, &(&1 == :elixir))

    assert File.exists?(
             Path.join(:code.priv_dir(:cluster_helper), "native/libcluster_helper_nif.so")
           )
  end

  describe "default scope" do
    test "is ClusterHelper and is joined at start" do
      assert ClusterHelper.list_scopes() == [ClusterHelper]
      assert ClusterHelper.add_role(:web) == :ok
      assert ClusterHelper.get_my_roles() == [:web]
      assert ClusterHelper.get_my_roles(ClusterHelper) == [:web]
      assert ClusterHelper.get_my_roles(nil) == [:web]
      assert ClusterHelper.get_nodes(:web) == [node()]
      assert ClusterHelper.get_nodes(:web, ClusterHelper) == [node()]
      assert ClusterHelper.get_roles(node()) == [:web]
      assert ClusterHelper.all_nodes() == [node()]
      assert ClusterHelper.all_nodes(ClusterHelper) == [node()]
    end

    test "an empty node is in no index" do
      assert ClusterHelper.get_my_roles() == []
      assert ClusterHelper.all_nodes() == []
      assert ClusterHelper.get_roles(node()) == []
      assert ClusterHelper.get_nodes(:web) == []
    end
  end

  describe "writes" do
    test "add_role/1,2 and add_roles/1,2 return :ok and are idempotent" do
      assert :ok = ClusterHelper.add_role(:a)
      assert :ok = ClusterHelper.add_role(:a)
      assert :ok = ClusterHelper.add_roles([:b, :c, :b])
      assert :ok = ClusterHelper.add_roles([])
      assert Enum.sort(ClusterHelper.get_my_roles()) == [:a, :b, :c]
      assert :ok = ClusterHelper.add_role(:x, :other)
      assert :ok = ClusterHelper.add_roles([:y], :other)
      assert Enum.sort(ClusterHelper.get_my_roles(:other)) == [:x, :y]
      refute :x in ClusterHelper.get_my_roles()
    end

    test "remove_role/1,2 and remove_roles/1,2 return :ok, also for absent roles" do
      :ok = ClusterHelper.add_roles([:a, :b, :c])
      :ok = ClusterHelper.add_roles([:a, :b], :other)
      assert :ok = ClusterHelper.remove_role(:a)
      assert :ok = ClusterHelper.remove_role(:a)
      assert :ok = ClusterHelper.remove_roles([:b, :zzz])
      assert :ok = ClusterHelper.remove_roles([])
      assert ClusterHelper.get_my_roles() == [:c]
      assert :ok = ClusterHelper.remove_role(:a, :other)
      assert :ok = ClusterHelper.remove_roles([:b], :other)
      assert ClusterHelper.get_my_roles(:other) == []
      assert ClusterHelper.get_nodes(:b, :other) == []
      assert :ok = ClusterHelper.remove_role(:a, :never_joined)
    end

    test "adding a role in a scope joins it" do
      refute :auto in ClusterHelper.list_scopes()
      :ok = ClusterHelper.add_role(:r, :auto)
      assert :auto in ClusterHelper.list_scopes()
      assert {:error, :already_joined} = ClusterHelper.join_scope(:auto)
    end
  end

  describe "scopes" do
    test "join_scope/1 and leave_scope/1" do
      assert :ok = ClusterHelper.join_scope(:js)
      assert {:error, :already_joined} = ClusterHelper.join_scope(:js)
      assert Enum.sort(ClusterHelper.list_scopes()) == [ClusterHelper, :js]
      :ok = ClusterHelper.add_role(:r, :js)
      assert :ok = ClusterHelper.leave_scope(:js)
      assert {:error, :not_joined} = ClusterHelper.leave_scope(:js)
      assert ClusterHelper.list_scopes() == [ClusterHelper]
      assert ClusterHelper.get_my_roles(:js) == []
      assert ClusterHelper.get_nodes(:r, :js) == []
      assert {:error, :not_joined} = ClusterHelper.leave_scope(:never)
    end

    test "scopes are isolated" do
      :ok = ClusterHelper.add_role(:shared_name, :s1)
      assert ClusterHelper.get_nodes(:shared_name, :s1) == [node()]
      assert ClusterHelper.get_nodes(:shared_name, :s2) == []
      assert ClusterHelper.get_nodes(:shared_name) == []
      assert ClusterHelper.all_nodes(:s2) == []
    end

    test "each scope runs a :pg scope under our supervisor, with our server in :all_nodes" do
      :ok = ClusterHelper.join_scope(:pg_check)
      server = Process.whereis(ClusterHelper.NodeConfig)

      for scope <- [ClusterHelper, :pg_check] do
        pid = Process.whereis(scope)
        assert is_pid(pid)

        assert {:undefined, pid, :worker, [:pg]} in DynamicSupervisor.which_children(
                 ClusterHelper.ScopeSupervisor
               )

        assert :pg.get_local_members(scope, :all_nodes) == [server]
        assert :pg.get_local_members(scope, ClusterHelper.Native.ours_group()) == [server]
      end

      :ok = ClusterHelper.leave_scope(:pg_check)
      assert :pg.get_local_members(:pg_check, :all_nodes) == []
    end

    test "leaving the default scope and coming back" do
      :ok = ClusterHelper.add_role(:r)
      assert :ok = ClusterHelper.leave_scope(ClusterHelper)
      assert ClusterHelper.get_my_roles() == []
      assert ClusterHelper.list_scopes() == []
      :ok = ClusterHelper.add_role(:r2)
      assert ClusterHelper.list_scopes() == [ClusterHelper]
      assert ClusterHelper.get_my_roles() == [:r2]
    end
  end

  describe "reads" do
    test "get_roles/1,2 of unknown nodes and local_node?/1" do
      assert ClusterHelper.get_roles(:ghost@nowhere) == []
      assert ClusterHelper.get_roles(:ghost@nowhere, :other) == []
      assert ClusterHelper.local_node?(node())
      refute ClusterHelper.local_node?(:ghost@nowhere)
    end

    test "big results are answered in full (dirty path)" do
      roles = Enum.to_list(1..50_000)
      :ok = ClusterHelper.add_roles(roles, :big)
      mine = ClusterHelper.get_my_roles(:big)
      assert length(mine) == 50_000
      assert Enum.sort(mine) == roles
      assert length(ClusterHelper.get_roles(node(), :big)) == 50_000
      assert ClusterHelper.get_nodes(25_000, :big) == [node()]
      :ok = ClusterHelper.remove_roles(Enum.to_list(1..49_999), :big)
      assert ClusterHelper.get_my_roles(:big) == [50_000]
    end

    test "reads do not go through the server" do
      :ok = ClusterHelper.add_role(:r)
      :ok = :sys.suspend(ClusterHelper.NodeConfig)

      try do
        assert ClusterHelper.get_my_roles() == [:r]
        assert ClusterHelper.get_nodes(:r) == [node()]
        assert ClusterHelper.get_roles(node()) == [:r]
        assert ClusterHelper.all_nodes() == [node()]
        assert ClusterHelper.list_scopes() == [ClusterHelper]
        assert ClusterHelper.NodeConfig.__get_generation__(ClusterHelper) == 1
        assert ClusterHelper.NodeConfig.__get_scopes__() == [ClusterHelper]
      after
        :sys.resume(ClusterHelper.NodeConfig)
      end
    end
  end

  describe "roles of every term type" do
    test "each is its own role, stored and found as given" do
      pid = self()
      ref = make_ref()
      big = 2 ** 100

      roles = [
        :atom,
        :ünïcödé,
        :日本,
        {:ü, [:é]},
        "string",
        ~c"charlist",
        42,
        -7,
        big,
        -big,
        1,
        1.0,
        2.5,
        {:tuple, 1},
        [1, :two, "three"],
        [],
        %{a: 1, b: [2]},
        %{},
        <<1, 2, 3>>,
        <<1::3>>,
        pid,
        ref,
        {}
      ]

      :ok = ClusterHelper.add_roles(roles, :types)
      mine = ClusterHelper.get_my_roles(:types)
      assert length(mine) == length(roles)

      for role <- roles do
        assert Enum.any?(mine, &(&1 === role)), "missing #{inspect(role)}"
        assert ClusterHelper.get_nodes(role, :types) == [node()], inspect(role)
      end

      # 1 and 1.0 are two roles: removing one leaves the other.
      :ok = ClusterHelper.remove_role(1, :types)
      assert ClusterHelper.get_nodes(1, :types) == []
      assert ClusterHelper.get_nodes(1.0, :types) == [node()]
      # Maps are equal whatever the order they were built in.
      assert ClusterHelper.get_nodes(Map.new(b: [2], a: 1), :types) == [node()]
    end
  end

  describe "bad input" do
    test "a non-atom scope raises ArgumentError naming the scope" do
      calls = [
        fn -> ClusterHelper.add_role(:r, "scope") end,
        fn -> ClusterHelper.add_roles([:r], 1) end,
        fn -> ClusterHelper.remove_role(:r, {:s}) end,
        fn -> ClusterHelper.remove_roles([:r], "s") end,
        fn -> ClusterHelper.get_nodes(:r, "s") end,
        fn -> ClusterHelper.get_roles(node(), "s") end,
        fn -> ClusterHelper.all_nodes("s") end,
        fn -> ClusterHelper.get_my_roles(1.5) end,
        fn -> ClusterHelper.join_scope("s") end,
        fn -> ClusterHelper.leave_scope(~c"s") end,
        fn -> ClusterHelper.join_scope(nil) end
      ]

      for call <- calls do
        error = assert_raise ArgumentError, call
        assert error.message =~ "scope"
      end
    end

    test "a non-list where a list is expected raises ArgumentError naming it" do
      for call <- [
            fn -> ClusterHelper.add_roles(:r) end,
            fn -> ClusterHelper.add_roles("r", :s) end,
            fn -> ClusterHelper.remove_roles(%{}) end,
            fn -> ClusterHelper.remove_roles([:a | :b]) end
          ] do
        error = assert_raise ArgumentError, call
        assert error.message =~ "roles"
      end
    end

    test "a non-atom node raises ArgumentError naming the node" do
      for call <- [
            fn -> ClusterHelper.get_roles("node@host") end,
            fn -> ClusterHelper.get_roles(~c"node@host", :s) end,
            fn -> ClusterHelper.local_node?("node@host") end
          ] do
        error = assert_raise ArgumentError, call
        assert error.message =~ "node"
      end
    end

    test "bad input changes nothing and the server lives on" do
      server = Process.whereis(ClusterHelper.NodeConfig)
      :ok = ClusterHelper.add_role(:kept)
      catch_error(ClusterHelper.add_roles(:oops))
      catch_error(ClusterHelper.add_role(:r, "bad"))
      assert ClusterHelper.get_my_roles() == [:kept]
      assert Process.whereis(ClusterHelper.NodeConfig) == server
    end
  end
end
