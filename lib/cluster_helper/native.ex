defmodule ClusterHelper.Native do
  @moduledoc false
  # The Rust NIF (native/cluster_helper_nif): the index, the local roles and
  # the sync engine, behind one resource. Owns nothing in Elixir; every
  # function here is replaced by the NIF when the library loads. The exact
  # interface is native/cluster_helper_nif/CONTRACT.md: keep the two in step.
  #
  # Reads run on a normal scheduler and answer :too_big instead of working
  # for long; their _dirty twins always answer. Engine inputs run on a dirty
  # scheduler and are called only by ClusterHelper.NodeConfig.

  @on_load :load_nif

  @doc false
  def load_nif do
    case :code.priv_dir(:cluster_helper) do
      {:error, reason} ->
        {:error, {:no_priv_dir, reason}}

      priv ->
        :erlang.load_nif(:filename.join(priv, ~c"native/libcluster_helper_nif"), 0)
    end
  end

  # Construction
  def new(_local_node, _incarnation), do: err()
  def ours_group, do: err()

  # Reads
  def get_nodes(_res, _scope, _role), do: err()
  def get_roles(_res, _scope, _node), do: err()
  def all_nodes(_res, _scope), do: err()
  def get_my_roles(_res, _scope), do: err()
  def get_nodes_dirty(_res, _scope, _role), do: err()
  def get_roles_dirty(_res, _scope, _node), do: err()
  def all_nodes_dirty(_res, _scope), do: err()
  def get_my_roles_dirty(_res, _scope), do: err()
  def list_scopes(_res), do: err()
  def generation(_res, _scope), do: err()

  # Engine inputs
  def add_roles(_res, _scope, _roles), do: err()
  def remove_roles(_res, _scope, _roles), do: err()
  def join_scope(_res, _scope), do: err()
  def leave_scope(_res, _scope), do: err()
  def node_up(_res, _node), do: err()
  def node_down(_res, _node), do: err()
  def member(_res, _scope, _group, _node, _present), do: err()
  def message(_res, _msg), do: err()
  def scopes_result(_res, _node, _result), do: err()
  def generation_result(_res, _node, _scope, _result), do: err()
  def pull_result(_res, _node, _scope, _token, _result), do: err()
  def tick(_res, _connected), do: err()

  defp err, do: :erlang.nif_error(:nif_not_loaded)
end
