# The test node must be distributed before :cluster_helper starts (the NIF
# resource is made for node()), so `mix test` runs with --no-start (mix.exs
# alias) and the app is started here.
{_, 0} = System.cmd("epmd", ["-daemon"])
name = :"ch_test_#{System.os_time(:millisecond)}_#{System.unique_integer([:positive])}@127.0.0.1"
{:ok, _} = :net_kernel.start([name, :longnames])
{:ok, _} = Application.ensure_all_started(:cluster_helper)

ExUnit.start(capture_log: true)
