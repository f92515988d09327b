# The compiler task lives in lib/ (it ships with the library) but Mix needs it
# before lib/ is compiled, so load it from source here, once.
unless Code.ensure_loaded?(Mix.Tasks.Compile.ClusterHelperNif) do
  Code.require_file("lib/mix/tasks/compile.cluster_helper_nif.ex", __DIR__)
end

defmodule ClusterHelper.MixProject do
  use Mix.Project

  def project do
    [
      app: :cluster_helper,
      version: "0.5.1",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # Our cargo step first: the NIF library must be in priv/ before anything loads it.
      compilers: [:cluster_helper_nif] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      # The compiler task is already in memory (loaded above) when lib/ compiles it.
      elixirc_options: [ignore_module_conflict: true],
      deps: [],
      # test_helper.exs starts distribution first, then the app (see there).
      aliases: [test: "test --no-start"],
      test_coverage: [ignore_modules: [Mix.Tasks.Compile.ClusterHelperNif]]
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {ClusterHelper.Application, []}
    ]
  end

  # test/legacy/ is deliberately absent: it defines modules named ClusterHelper
  # and is only ever compiled on a separate :peer node.
  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
