defmodule ClusterHelper.Protocol do
  @moduledoc false
  # What ClusterHelper.NodeConfig hears and says on the wire, in one place.
  # The Rust engine decides what every message means; this module only tells
  # protocol messages from other mail and names the fixed wire constants.
  #
  # | message / call                                   | from -> to              | meaning                               |
  # |--------------------------------------------------|-------------------------|---------------------------------------|
  # | {:new_roles, scope, [role], node}                | any server -> members   | node gained roles (0.5.1 shape)       |
  # | {:remove_roles, scope, [role], node}             | any server -> members   | node lost roles (0.5.1 shape)         |
  # | {:ch_..., ...}                                   | our server -> our server| our own protocol (engine-defined)     |
  # | erpc ClusterHelper.get_my_roles(scope)           | puller -> any node      | local roles of the node in scope      |
  # | erpc NodeConfig.__get_generation__(scope)        | puller -> any node      | generation of scope, 0 when not in it |
  # | erpc NodeConfig.__get_scopes__()                 | puller -> any node      | scopes the node joined                |
  #
  # :pg groups in each scope: :all_nodes (every ClusterHelper server, 0.5.1
  # included) and Native.ours_group() (only ours; joined first).

  @legacy_group :all_nodes

  # Tags of our own messages (cluster_helper_core::protocol). Naming them here
  # also makes sure the atoms exist before the NIF decodes its actions.
  @ours_tags [:ch_update, :ch_digest, :ch_pull, :ch_snapshot]

  @doc false
  def legacy_group, do: @legacy_group

  @doc false
  def ours_tags, do: @ours_tags

  @doc false
  # True for mail the engine must see (Native.message/2); it validates shapes.
  @spec message?(term()) :: boolean()
  def message?(msg) when is_tuple(msg) and tuple_size(msg) > 0 do
    case elem(msg, 0) do
      :new_roles -> true
      :remove_roles -> true
      tag when is_atom(tag) -> ours?(tag)
      _ -> false
    end
  end

  def message?(_), do: false

  defp ours?(tag), do: match?("ch_" <> _, Atom.to_string(tag))
end
