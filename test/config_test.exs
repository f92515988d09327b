defmodule ClusterHelper.ConfigTest do
  # Single node: every config key of 0.5.1, with its default.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias ClusterHelper.NodeConfig
  alias ClusterHelper.Test.App

  setup do
    on_exit(fn -> App.restart() end)
  end

  test "defaults: no roles, default scope ClusterHelper joined, 5000/7000 ms, no handler" do
    App.restart()
    assert ClusterHelper.list_scopes() == [ClusterHelper]
    assert ClusterHelper.get_my_roles() == []
    assert NodeConfig.__get_generation__(ClusterHelper) == 0
    assert Application.get_env(:cluster_helper, :pull_timeout) == nil
    assert ticks_in(300) == 0
  end

  test "roles: added in the default scope at start" do
    App.restart(roles: [:cfg_a, "cfg_b", {:cfg, 3}])
    assert Enum.sort(ClusterHelper.get_my_roles()) == Enum.sort([:cfg_a, "cfg_b", {:cfg, 3}])
    assert ClusterHelper.get_nodes("cfg_b") == [node()]
    assert NodeConfig.__get_generation__(ClusterHelper) == 1
  end

  test "roles: an invalid value is logged and the app still starts" do
    log = capture_log(fn -> App.restart(roles: :not_a_list) end)
    assert log =~ "roles"
    assert ClusterHelper.get_my_roles() == []
    assert ClusterHelper.add_role(:still_works) == :ok
  end

  test "scope: changes the default scope of every function" do
    App.restart(scope: :my_default, roles: [:r])
    assert ClusterHelper.list_scopes() == [:my_default]
    assert ClusterHelper.get_my_roles() == [:r]
    assert ClusterHelper.get_my_roles(:my_default) == [:r]
    assert ClusterHelper.get_my_roles(ClusterHelper) == []
    :ok = ClusterHelper.add_role(:r2)
    assert ClusterHelper.get_nodes(:r2, :my_default) == [node()]
    assert ClusterHelper.get_nodes(:r2) == [node()]
    assert ClusterHelper.get_roles(node()) |> Enum.sort() == [:r, :r2]
    assert ClusterHelper.all_nodes() == [node()]
    :ok = ClusterHelper.remove_roles([:r, :r2])
    assert ClusterHelper.get_my_roles(:my_default) == []
    assert Process.whereis(:my_default) |> is_pid()
  end

  test "scope: a non-atom fails the start with a message naming it" do
    assert {:error, {:cluster_helper, reason}} = start_with(scope: "nope")
    assert inspect(reason) =~ "scope"
  end

  test "scopes: joined at start instead of the default one" do
    App.restart(scopes: [:s_one, :s_two])
    assert Enum.sort(ClusterHelper.list_scopes()) == [:s_one, :s_two]
    assert ClusterHelper.NodeConfig.__get_scopes__() |> Enum.sort() == [:s_one, :s_two]

    # roles go to the default scope, which they join
    App.restart(scopes: [:s_one], roles: [:x])
    assert Enum.sort(ClusterHelper.list_scopes()) == [ClusterHelper, :s_one]
    assert ClusterHelper.get_my_roles() == [:x]
  end

  test "scopes: invalid values are logged and the good ones used" do
    log = capture_log(fn -> App.restart(scopes: [:good, "bad"]) end)
    assert log =~ "scopes"
    assert ClusterHelper.list_scopes() == [:good]

    log = capture_log(fn -> App.restart(scopes: :not_a_list) end)
    assert log =~ "scopes"
    assert ClusterHelper.list_scopes() == [ClusterHelper]
  end

  test "pull_interval: the repair tick runs at that period, read at each tick" do
    App.restart(pull_interval: 50)
    assert ticks_in(600) >= 4
    Application.put_env(:cluster_helper, :pull_interval, 60_000)
    # the tick already scheduled may still come, then no more
    Process.sleep(100)
    assert ticks_in(400) == 0
  end

  test "event_handler is read when events fire (runtime put_env works)" do
    App.restart()
    Application.put_env(:cluster_helper, :event_handler, ClusterHelper.Test.Recorder)
    ClusterHelper.Test.Recorder.sink(self())
    :ok = ClusterHelper.add_role(:seen)
    assert_receive {:recorded, _, {:role_added, _, :seen}}
  end

  defp start_with(env) do
    _ = Application.stop(:cluster_helper)
    for {key, value} <- env, do: Application.put_env(:cluster_helper, key, value)

    try do
      capture_log(fn ->
        send(self(), {:result, Application.ensure_all_started(:cluster_helper)})
      end)

      assert_received {:result, result}
      result
    after
      for {key, _} <- env, do: Application.delete_env(:cluster_helper, key)
    end
  end

  # Counts :tick messages the server receives during `ms` milliseconds.
  defp ticks_in(ms) do
    server = Process.whereis(NodeConfig)
    :erlang.trace(server, true, [:receive])

    try do
      Process.sleep(ms)
      count_ticks(server, 0)
    after
      :erlang.trace(server, false, [:receive])
    end
  end

  defp count_ticks(server, n) do
    receive do
      {:trace, ^server, :receive, :tick} -> count_ticks(server, n + 1)
      {:trace, ^server, :receive, _} -> count_ticks(server, n)
    after
      0 -> n
    end
  end
end
