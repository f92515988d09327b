# Figures 1 (reads) and 2 (writes): our NIF-backed ClusterHelper next to the
# 0.5.1 layout (bench/baseline_051.ex) in one VM, on the same data.
#
#   elixir -pa _build/bench/lib/cluster_helper/ebin -r bench/baseline_051.ex \
#     bench/reads_writes.exs OUT_FILE reads|writes [DATASET]
#
# Writes Erlang terms (one per line, :file.consult/1) to OUT_FILE (appends).
# Our remote data is fed the way a 0.5.1 peer's broadcast arrives: a
# {:new_roles, scope, roles, node} message to our server, fake node atoms.

defmodule Bench.RW do
  alias Bench.Baseline051, as: B

  @slice_ms 250

  def main([out, "reads", dataset]), do: reads(out, dataset)
  def main([out, "writes"]), do: writes(out)

  def start(local_roles) do
    Application.put_env(:cluster_helper, :roles, local_roles)
    # no periodic repair: it would drop the fake nodes (they are not connected)
    Application.put_env(:cluster_helper, :pull_interval, 3_600_000)
    Application.put_env(:logger, :level, :error)
    {:ok, _} = Application.ensure_all_started(:cluster_helper)
    {:ok, _} = B.start_link()
    :ok = B.add_roles(local_roles)
  end

  def fake(i), do: :"fake#{i}@10.0.0.#{rem(i, 250) + 1}"
  def roles(k), do: for(r <- 1..k, do: {:role, r})

  # loads `nodes` fake nodes x `k` roles into `scope` on both sides
  def load(scope, nodes, k, base \\ 0) do
    for i <- base..(base + nodes - 1) do
      send(ClusterHelper.NodeConfig, {:new_roles, scope, roles(k), fake(i)})
      :ok = B.load(scope, fake(i), roles(k))
    end

    sync()
  end

  def sync, do: _ = :sys.get_state(ClusterHelper.NodeConfig)

  def datasets do
    %{
      "1x10" => {1, 1, "1 node x 10 roles"},
      "100x10" => {1, 100, "100 nodes x 10 roles"},
      "1000x10" => {1, 1000, "1,000 nodes x 10 roles"},
      "10scopes" => {10, 100, "10 scopes x 100 nodes x 10 roles"}
    }
  end

  def reads(out, ds) do
    {nscopes, nodes, _} = Map.fetch!(datasets(), ds)
    start(roles(10))
    default = ClusterHelper

    scopes = [default | for(i <- 2..nscopes//1, do: :"bench_scope_#{i}")]
    for s <- scopes, s != default, do: :ok = ClusterHelper.join_scope(s)
    for s <- scopes, do: load(s, nodes, 10)

    # sanity: both sides see the same data, through the default scope (nil)
    check = fn ->
      [
        Enum.sort(ClusterHelper.get_nodes({:role, 3})) == Enum.sort(B.get_nodes({:role, 3})),
        length(ClusterHelper.get_nodes({:role, 3})) == nodes + 1,
        Enum.sort(ClusterHelper.get_roles(fake(0))) == Enum.sort(B.get_roles(fake(0))),
        Enum.sort(ClusterHelper.all_nodes()) == Enum.sort(B.all_nodes()),
        Enum.sort(ClusterHelper.get_my_roles()) == Enum.sort(B.get_my_roles())
      ]
    end

    res = check.()
    unless Enum.all?(res), do: raise("data differ: #{inspect(res)}")

    n0 = fake(0)

    ops = [
      {:get_nodes, fn -> ClusterHelper.get_nodes({:role, 3}) end,
       fn -> B.get_nodes({:role, 3}) end},
      {:get_roles, fn -> ClusterHelper.get_roles(n0) end, fn -> B.get_roles(n0) end},
      {:all_nodes, fn -> ClusterHelper.all_nodes() end, fn -> B.all_nodes() end},
      {:get_my_roles, fn -> ClusterHelper.get_my_roles() end, fn -> B.get_my_roles() end}
    ]

    for {op, ours, base} <- ops, conc <- [1, 2, 8] do
      # two rounds, alternating order, samples merged
      r1o = run(ours, conc)
      r1b = run(base, conc)
      r2b = run(base, conc)
      r2o = run(ours, conc)
      emit(out, {:read, ds, op, conc, :ours, merge(r1o, r2o)})
      emit(out, {:read, ds, op, conc, :baseline, merge(r1b, r2b)})

      IO.puts(
        "reads #{ds} #{op} x#{conc}: ours #{fmt(merge(r1o, r2o))} | 0.5.1 #{fmt(merge(r1b, r2b))}"
      )
    end
  end

  defp fmt(m), do: "#{round(m.median)} ns/call, #{round(m.calls_per_s)} calls/s"

  # `conc` processes call `f` in batches for @slice_ms; per-batch ns/call samples
  def run(f, conc) do
    # calibrate a batch size of ~100 us
    t0 = System.monotonic_time(:nanosecond)
    for _ <- 1..20, do: f.()
    per = max(1, div(System.monotonic_time(:nanosecond) - t0, 20))
    batch = max(1, min(10_000, div(100_000, per)))
    parent = self()
    go = make_ref()

    pids =
      for _ <- 1..conc do
        spawn_link(fn ->
          receive do
            ^go -> :ok
          end

          deadline = System.monotonic_time(:millisecond) + @slice_ms
          send(parent, {self(), loop(f, batch, deadline, [], 0)})
        end)
      end

    t0 = System.monotonic_time(:nanosecond)
    for p <- pids, do: send(p, go)

    res =
      for p <- pids,
          do:
            (receive do
               {^p, r} -> r
             end)

    wall = System.monotonic_time(:nanosecond) - t0
    calls = Enum.sum(for {_, c} <- res, do: c)
    samples = Enum.flat_map(res, fn {s, _} -> s end)
    %{samples: samples, calls: calls, wall_ns: wall}
  end

  defp loop(f, batch, deadline, acc, calls) do
    if System.monotonic_time(:millisecond) >= deadline do
      {acc, calls}
    else
      t0 = System.monotonic_time(:nanosecond)
      rep(f, batch)
      dt = System.monotonic_time(:nanosecond) - t0
      loop(f, batch, deadline, [dt / batch | acc], calls + batch)
    end
  end

  defp rep(_, 0), do: :ok

  defp rep(f, n),
    do:
      (
        f.()
        rep(f, n - 1)
      )

  def merge(a, b) do
    samples = Enum.sort(a.samples ++ b.samples)

    %{
      median: pct(samples, 0.5),
      p99: pct(samples, 0.99),
      n: length(samples),
      calls_per_s: (a.calls + b.calls) / ((a.wall_ns + b.wall_ns) / 1.0e9)
    }
  end

  def pct([], _), do: 0.0
  def pct(sorted, q), do: Enum.at(sorted, min(length(sorted) - 1, trunc(q * length(sorted))))

  def stats(samples) do
    s = Enum.sort(samples)
    %{median: pct(s, 0.5), p99: pct(s, 0.99), n: length(s), calls_per_s: 0.0}
  end

  def emit(out, term), do: File.write!(out, :io_lib.format("~p.~n", [term]), [:append])

  ## Writes

  def writes(out) do
    start(roles(10))

    # local node holding 110, 1,010, 10,010 roles (10 + 100/1,000/10,000 more)
    Enum.reduce([110, 1010, 10010], 10, fn total, have ->
      more = for i <- (have + 1)..total//1, do: {:role, i}
      t0 = System.monotonic_time(:nanosecond)
      :ok = ClusterHelper.add_roles(more)
      t1 = System.monotonic_time(:nanosecond)
      :ok = B.add_roles(more)
      t2 = System.monotonic_time(:nanosecond)
      emit(out, {:bulk_add, length(more), total, t1 - t0, t2 - t1})

      IO.puts(
        "bulk add of #{length(more)} roles (to #{total}): ours #{div(t1 - t0, 1000)} us, 0.5.1 #{div(t2 - t1, 1000)} us"
      )

      true = length(ClusterHelper.get_my_roles()) == total and length(B.get_my_roles()) == total

      for round <- 1..2 do
        for {impl, add, rm} <- [
              {:ours, &ClusterHelper.add_role/1, &ClusterHelper.remove_role/1},
              {:baseline, &B.add_role/1, &B.remove_role/1}
            ] do
          {a, r} = add_remove(add, rm, round)
          Process.put({impl, total}, merge_lists(Process.get({impl, total}), {a, r}))
        end
      end

      for impl <- [:ours, :baseline] do
        {a, r} = Process.get({impl, total})
        emit(out, {:write, :add_role, total, impl, stats(a)})
        emit(out, {:write, :remove_role, total, impl, stats(r)})

        IO.puts(
          "writes #{total} roles #{impl}: add #{round(stats(a).median)} ns, remove #{round(stats(r).median)} ns"
        )
      end

      total
    end)

    # removing a node from a 10k-entry index (1,000 fake nodes x 10 roles),
    # replaced by a fresh node after each removal so the size stays 10k
    load(ClusterHelper, 1000, 10)
    true = length(ClusterHelper.all_nodes()) == 1001 and length(B.all_nodes()) == 1001

    {ours, base} =
      Enum.reduce(0..199, {[], []}, fn i, {o, b} ->
        victim = fake(i)
        t0 = System.monotonic_time(:nanosecond)
        send(ClusterHelper.NodeConfig, {:nodedown, victim, %{node_type: :visible}})
        sync()
        t1 = System.monotonic_time(:nanosecond)
        :ok = B.remove_node(victim)
        t2 = System.monotonic_time(:nanosecond)
        load(ClusterHelper, 1, 10, 100_000 + i)
        {[t1 - t0 | o], [t2 - t1 | b]}
      end)

    true = length(ClusterHelper.all_nodes()) == 1001 and length(B.all_nodes()) == 1001
    true = ClusterHelper.get_roles(fake(0)) == [] and B.get_roles(fake(0)) == []
    emit(out, {:write, :remove_node, 10000, :ours, stats(ours)})
    emit(out, {:write, :remove_node, 10000, :baseline, stats(base)})

    IO.puts(
      "remove node (10k): ours #{round(stats(ours).median)} ns, 0.5.1 #{round(stats(base).median)} ns"
    )
  end

  defp merge_lists(nil, x), do: x
  defp merge_lists({a1, r1}, {a2, r2}), do: {a1 ++ a2, r1 ++ r2}

  # times single add_role / remove_role calls of a fresh role for ~@slice_ms
  defp add_remove(add, rm, round) do
    deadline = System.monotonic_time(:millisecond) + @slice_ms
    do_ar(add, rm, round, 0, deadline, [], [])
  end

  defp do_ar(add, rm, round, i, deadline, as, rs) do
    if System.monotonic_time(:millisecond) >= deadline do
      {as, rs}
    else
      role = {:extra, round, i}
      t0 = System.monotonic_time(:nanosecond)
      :ok = add.(role)
      t1 = System.monotonic_time(:nanosecond)
      :ok = rm.(role)
      t2 = System.monotonic_time(:nanosecond)
      do_ar(add, rm, round, i + 1, deadline, [t1 - t0 | as], [t2 - t1 | rs])
    end
  end
end

Bench.RW.main(System.argv())
