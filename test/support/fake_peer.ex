defmodule ClusterHelper.Test.FakePeer do
  @moduledoc """
  Source of a fake ClusterHelper node whose every erpc answer is steered by
  `:persistent_term` (test support only). Compile it on a bare peer; it
  defines FakePeer, ClusterHelper and ClusterHelper.NodeConfig there.
  """

  @source """
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

  def source, do: @source
end
