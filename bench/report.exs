# Turns the raw results of scripts/bench.sh (bench/out/*.terms, criterion's
# output) into bench/RESULTS.md and bench/*.png (gnuplot).
#
#   elixir bench/report.exs OUT_DIR BENCH_DIR SECONDS
#
# Ratios are "ours vs 0.5.1": for times, baseline / ours (above 1: we are
# faster); for rates, ours / baseline (above 1: we are faster).

defmodule Bench.Report do
  def main([out_dir, bench_dir, secs]) do
    terms =
      Path.wildcard(Path.join(out_dir, "*.terms"))
      |> Enum.flat_map(fn f ->
        {:ok, ts} = :file.consult(String.to_charlist(f))
        ts
      end)

    crit = parse_criterion(Path.join(out_dir, "criterion.txt"))
    env = File.read!(Path.join(out_dir, "env.txt"))
    plots = Path.join(out_dir, "plots")
    File.mkdir_p!(plots)

    md =
      [
        header(env, secs),
        headline(terms),
        reads(terms, plots),
        writes(terms, plots),
        propagation(terms, plots),
        idle(terms, plots),
        throughput(terms, plots),
        scale(terms, plots),
        criterion(crit),
        notes()
      ]
      |> Enum.join("\n")

    for gp <- Path.wildcard(Path.join(plots, "*.gp")) do
      {_, 0} = System.cmd("gnuplot", [Path.basename(gp)], cd: plots, stderr_to_stdout: true)
    end

    for png <- Path.wildcard(Path.join(plots, "*.png")),
        do: File.cp!(png, Path.join(bench_dir, Path.basename(png)))

    File.write!(Path.join(bench_dir, "RESULTS.md"), md)

    IO.puts(
      "wrote #{Path.join(bench_dir, "RESULTS.md")} and #{length(Path.wildcard(Path.join(plots, "*.png")))} plots"
    )
  end

  ## formatting

  def ns(x) when x >= 1_000_000, do: "#{f(x / 1_000_000)} ms"
  def ns(x) when x >= 1_000, do: "#{f(x / 1_000)} µs"
  def ns(x), do: "#{round(x)} ns"
  def us(x) when x >= 1_000, do: "#{f(x / 1_000)} ms"
  def us(x), do: "#{round(x)} µs"
  def f(x) when x >= 100, do: "#{round(x)}"
  def f(x) when x >= 10, do: :erlang.float_to_binary(x / 1, decimals: 1)
  def f(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
  def rate(x) when x >= 1_000_000, do: "#{f(x / 1_000_000)} M/s"
  def rate(x) when x >= 1_000, do: "#{f(x / 1_000)} k/s"
  def rate(x), do: "#{round(x)}/s"
  def ratio(x), do: "**#{f(x)}×**"

  def table(head, rows) do
    [
      "| " <> Enum.join(head, " | ") <> " |",
      "|" <> String.duplicate("---|", length(head)),
      Enum.map(rows, fn r -> "| " <> Enum.join(r, " | ") <> " |" end)
    ]
    |> List.flatten()
    |> Enum.join("\n")
  end

  def pct([], _), do: 0
  def pct(l, q), do: Enum.at(Enum.sort(l), min(length(l) - 1, trunc(q * length(l))))

  def median(l), do: pct(l, 0.5)

  def geomean([]), do: 0.0
  def geomean(l), do: :math.exp(Enum.sum(Enum.map(l, &:math.log/1)) / length(l))

  ## sections

  def header(env, secs) do
    """
    # Benchmarks: ours vs the 0.5.1 layout

    Written by `scripts/bench.sh` (#{secs} s for the whole run, build included).
    Every figure below comes from that one run on this machine; nothing is
    copied from elsewhere. This machine is shared and noisy: read the ratios and
    medians, not single absolute times.

    ```
    #{String.trim(env)}
    ```

    Ratios: for times, *0.5.1 time / our time*; for rates, *our rate / 0.5.1
    rate*. Above 1 we are faster, below 1 **we lose**.
    """
  end

  def read_ratios(terms, c) do
    reads = for {:read, ds, op, ^c, :ours, m} <- terms, do: {{ds, op}, m}
    base = Map.new(for {:read, ds, op, ^c, :baseline, m} <- terms, do: {{ds, op}, m})

    for {k, m} <- reads,
        Map.has_key?(base, k),
        do: {k, base[k].median / m.median, base[k].calls_per_s, m.calls_per_s}
  end

  def headline(terms) do
    read_ratios = for {k, r, _, _} <- read_ratios(terms, 1), do: {k, r}
    losses = for {k, r} <- read_ratios, r < 1, do: k

    w = for {:write, op, size, :ours, m} <- terms, do: {{op, size}, m}
    wb = Map.new(for {:write, op, size, :baseline, m} <- terms, do: {{op, size}, m})
    write_ratios = for {k, m} <- w, Map.has_key?(wb, k), do: {k, wb[k].median / m.median}

    idle = for {:idle, :ours, n, s, msgs, _} <- terms, do: {{n, s}, msgs}
    idle_b = Map.new(for {:idle, :legacy, n, s, msgs, _} <- terms, do: {{n, s}, msgs})

    lines =
      [
        if read_ratios != [] do
          {lo, hi} = Enum.min_max(Enum.map(read_ratios, &elem(&1, 1)))

          "- Reads, one reader: geometric mean #{ratio(geomean(Enum.map(read_ratios, &elem(&1, 1))))} " <>
            "(from #{f(lo)}× to #{f(hi)}× over #{length(read_ratios)} cases; we lose in #{length(losses)}: " <>
            Enum.map_join(losses, ", ", fn {ds, op} -> "#{op} #{ds}" end) <> ")."
        end,
        for c <- [2, 8], rr = read_ratios(terms, c), rr != [] do
          tp = Enum.map(rr, fn {_, _, b, o} -> o / b end)
          lost = for {{ds, op}, _, b, o} <- rr, o < b, do: "#{op} #{ds}"

          "- Reads, #{c} reader processes, aggregate calls/s: geometric mean #{ratio(geomean(tp))} " <>
            "(we lose in #{length(lost)} of #{length(rr)}: #{Enum.join(lost, ", ")})."
        end,
        if write_ratios != [] do
          "- Writes: " <>
            Enum.map_join(Enum.sort(write_ratios), "; ", fn {{op, size}, r} ->
              "#{op} #{size}: #{f(r)}×"
            end) <> "."
        end,
        if idle != [] do
          "- Idle sync traffic: " <>
            Enum.map_join(Enum.sort(idle), "; ", fn {{n, s}, m} ->
              "N=#{n} S=#{s}: #{f(m)} vs #{f(idle_b[{n, s}] || 0)} msgs/interval"
            end) <> "."
        end,
        prop_line(terms),
        tp_line(terms),
        for(
          {:scale, k, p, conv, _, _, kb, _} <-
            Enum.sort(terms |> Enum.filter(&match?({:scale, _, _, _, _, _, _, _}, &1))),
          do:
            "K=#{k}: #{f(conv)} ms, #{f(kb / 1024)} MiB/node#{if p > 1, do: " (#{p} processes)", else: ""}"
        )
        |> then(fn
          [] ->
            nil

          l ->
            "- Scale (K Rust nodes + 2 Elixir, time until all see all roles, RSS per Rust node): " <>
              Enum.join(l, "; ") <> "."
        end)
      ]
      |> List.flatten()
      |> Enum.reject(&is_nil/1)

    "## Headline\n\n" <> Enum.join(lines, "\n") <> "\n"
  end

  def prop_line(terms) do
    l = for {:prop, _, _, us} <- terms, do: us
    k = for {:kill, _, _, us} <- terms, do: us

    if l != [],
      do:
        "- Propagation, 5-node mixed cluster: role change to event p50 #{us(pct(l, 0.5))}, p99 #{us(pct(l, 0.99))} (#{length(l)} latencies); " <>
          "kill -9 to roles gone everywhere: median #{us(median(k))}, worst #{us(Enum.max(k, fn -> 0 end))}."
  end

  def tp_line(terms) do
    m = fn d -> median(for {:throughput, ^d, n, us} <- terms, do: n / (us / 1.0e6)) end
    bb = m.(:beam_to_beam)

    if is_number(bb) and bb > 0,
      do:
        "- Distribution throughput (small messages): BEAM→BEAM #{rate(bb)}, Rust→BEAM #{rate(m.(:rust_to_beam))} (#{f(m.(:rust_to_beam) / bb)}×), " <>
          "BEAM→Rust #{rate(m.(:beam_to_rust))} (#{f(m.(:beam_to_rust) / bb)}×)."
  end

  @ds ["1x10", "100x10", "1000x10", "10scopes"]
  @ops [:get_nodes, :get_roles, :all_nodes, :get_my_roles]

  def reads(terms, plots) do
    get = fn ds, op, c, impl ->
      Enum.find_value(terms, fn
        {:read, ^ds, ^op, ^c, ^impl, m} -> m
        _ -> nil
      end)
    end

    tables =
      for c <- [1, 2, 8] do
        rows =
          for ds <- @ds, op <- @ops, o = get.(ds, op, c, :ours), b = get.(ds, op, c, :baseline) do
            [
              ds,
              "`#{op}`",
              ns(o.median),
              ns(b.median),
              ratio(b.median / o.median),
              ns(o.p99),
              ns(b.p99),
              rate(o.calls_per_s),
              rate(b.calls_per_s),
              ratio(o.calls_per_s / b.calls_per_s)
            ]
          end

        "### #{c} concurrent reader process#{if c > 1, do: "es"}\n\n" <>
          table(
            [
              "data",
              "read",
              "ours ns/call (median)",
              "0.5.1",
              "ratio",
              "ours p99",
              "0.5.1 p99",
              "ours calls/s (all readers)",
              "0.5.1 calls/s",
              "ratio"
            ],
            rows
          )
      end

    # plot: median ns/call at 1 reader, per op, per dataset
    dat =
      for op <- @ops, ds <- @ds, o = get.(ds, op, 1, :ours), b = get.(ds, op, 1, :baseline) do
        "\"#{op} #{ds}\" #{o.median} #{b.median}"
      end

    File.write!(Path.join(plots, "reads.dat"), Enum.join(dat, "\n") <> "\n")

    File.write!(Path.join(plots, "reads.gp"), """
    set terminal pngcairo size 1200,600 noenhanced font "DejaVu Sans,10"
    set output "bench_reads.png"
    set title "Reads, one reader: median ns per call (log scale, lower is better)"
    set style data histograms
    set style histogram clustered gap 1
    set style fill solid 0.8 border -1
    set logscale y
    set ylabel "ns/call"
    set xtics rotate by -40
    set rmargin 10
    set bmargin 8
    set key top left
    plot "reads.dat" using 2:xtic(1) title "ours (NIF)", "" using 3 title "0.5.1 layout (ETS)"
    """)

    tp =
      for op <- @ops,
          c <- [1, 2, 8],
          o = get.("1000x10", op, c, :ours),
          b = get.("1000x10", op, c, :baseline) do
        "\"#{op} x#{c}\" #{o.calls_per_s} #{b.calls_per_s}"
      end

    File.write!(Path.join(plots, "reads_tp.dat"), Enum.join(tp, "\n") <> "\n")

    File.write!(Path.join(plots, "reads_tp.gp"), """
    set terminal pngcairo size 1200,600 noenhanced font "DejaVu Sans,10"
    set output "bench_reads_concurrency.png"
    set title "Reads on 1,000 nodes x 10 roles: aggregate calls/s with 1, 2, 8 reader processes (higher is better)"
    set style data histograms
    set style histogram clustered gap 1
    set style fill solid 0.8 border -1
    set logscale y
    set ylabel "calls/s"
    set xtics rotate by -40
    set rmargin 10
    set bmargin 8
    set key top right
    set yrange [1000:*]
    plot "reads_tp.dat" using 2:xtic(1) title "ours (NIF)", "" using 3 title "0.5.1 layout (ETS)"
    """)

    """
    ## 1. Reads

    `ClusterHelper.get_nodes/1`, `get_roles/1`, `all_nodes/0`, `get_my_roles/0`
    (default scope, so 0.5.1's `Application.get_env/3` is included) against
    `bench/baseline_051.ex`, in one VM on the same data: remote nodes fed as
    0.5.1 broadcasts (`{:new_roles, scope, roles, node}`), 10 roles each
    (`{:role, 1..10}`, shared by every node, so `get_nodes` returns every
    node), the local node holding the same 10 roles. `10scopes` = 10 scopes of
    100 nodes x 10 roles, read in one. Each reader process calls in batches
    (~100 µs); samples are per-batch ns/call (two 250 ms runs per case,
    interleaved ours/0.5.1); calls/s is the aggregate of all readers over
    wall time. With 8 readers on 2 cores, ns/call includes waiting for a core.

    ![reads](bench_reads.png)
    ![reads, concurrency](bench_reads_concurrency.png)

    #{Enum.join(tables, "\n\n")}
    """
  end

  def writes(terms, plots) do
    rows =
      for {op, size} <- [
            {:add_role, 110},
            {:remove_role, 110},
            {:add_role, 1010},
            {:remove_role, 1010},
            {:add_role, 10010},
            {:remove_role, 10010},
            {:remove_node, 10000}
          ],
          o = find(terms, {:write, op, size, :ours}),
          b = find(terms, {:write, op, size, :baseline}) do
        {op, size, o, b}
      end

    dat =
      for {op, size, o, b} <- rows, do: "\"#{op} #{size}\" #{o.median / 1000} #{b.median / 1000}"

    File.write!(Path.join(plots, "writes.dat"), Enum.join(dat, "\n") <> "\n")

    File.write!(Path.join(plots, "writes.gp"), """
    set terminal pngcairo size 1000,500 noenhanced font "DejaVu Sans,10"
    set output "bench_writes.png"
    set title "Writes: median µs per call (log scale, lower is better)"
    set style data histograms
    set style histogram clustered gap 1
    set style fill solid 0.8 border -1
    set logscale y
    set ylabel "µs/call"
    set xtics rotate by -30
    plot "writes.dat" using 2:xtic(1) title "ours", "" using 3 title "0.5.1 layout"
    """)

    """
    ## 2. Writes

    `add_role/1` then `remove_role/1` of a fresh role on a node whose local roles
    number 110, 1,010 and 10,010 (each call timed alone, through each side's
    server: ours `ClusterHelper.NodeConfig` + the NIF engine, 0.5.1 its
    GenServer + ETS); and removing a node (`:nodedown`) from an index of
    1,000 nodes x 10 roles (10k entries): ours sends `{:nodedown, ...}` to our
    server and waits for it to be handled, 0.5.1 `:ets.match_delete/2` on both
    key shapes in its server. 200 removals, each followed (untimed) by a fresh
    node so the size stays 10k.

    ![writes](bench_writes.png)

    #{table(["write", "index", "ours (median)", "0.5.1", "ratio", "ours p99", "0.5.1 p99", "samples"], for({op, size, o, b} <- rows, do: ["`#{op}`", "#{size}", ns(o.median), ns(b.median), ratio(b.median / o.median), ns(o.p99), ns(b.p99), "#{o.n} / #{b.n}"]))}

    Setting up those nodes: one `add_roles/1` call with all the new roles
    (single run each; a 0.5.1 `:bag` key with k objects costs O(k) per insert,
    so a node's roles cost O(k²) to add).

    #{table(["roles added", "to reach", "ours", "0.5.1", "ratio"], for({:bulk_add, n, total, o, b} <- terms, do: ["#{n}", "#{total}", ns(o), ns(b), ratio(b / o)]))}
    """
  end

  def find(terms, {a, b, c, d}) do
    Enum.find_value(terms, fn
      {^a, ^b, ^c, ^d, m} -> m
      _ -> nil
    end)
  end

  def propagation(terms, plots) do
    samples = for {:prop, from, to, us} <- terms, do: {{from, to}, us}

    if samples == [] do
      "## 3. Propagation\n\nNot measured in this run.\n"
    else
      groups = Enum.group_by(samples, &elem(&1, 0), &elem(&1, 1))
      all = Enum.map(samples, &elem(&1, 1))

      rows =
        for {{from, to}, l} <- Enum.sort(groups) do
          ["#{from} → #{to}", "#{length(l)}", us(pct(l, 0.5)), us(pct(l, 0.99)), us(Enum.max(l))]
        end ++
          [
            [
              "**all**",
              "#{length(all)}",
              us(pct(all, 0.5)),
              us(pct(all, 0.99)),
              us(Enum.max(all))
            ]
          ]

      kills = for {:kill, k, to, us} <- terms, do: {k, to, us}
      per_kill = Enum.group_by(kills, &elem(&1, 0), &elem(&1, 2))

      krows =
        for {k, l} <- Enum.sort(per_kill),
            do: ["victim #{k + 1}", us(Enum.min(l)), us(median(l)), us(Enum.max(l))]

      sorted = Enum.sort(all)
      n = length(sorted)
      cdf = sorted |> Enum.with_index(1) |> Enum.map(fn {v, i} -> "#{v / 1000} #{i / n}" end)
      File.write!(Path.join(plots, "prop.dat"), Enum.join(cdf, "\n") <> "\n")

      File.write!(Path.join(plots, "prop.gp"), """
      set terminal pngcairo size 800,500 noenhanced font "DejaVu Sans,10"
      set output "bench_propagation.png"
      set title "Role change to event on every other node (5-node mixed cluster, #{n} samples)"
      set xlabel "ms (log)"
      set ylabel "fraction of samples"
      set logscale x
      set grid
      plot "prop.dat" using 1:2 with steps lw 2 title "CDF"
      """)

      """
      ## 3. Propagation (5-node mixed cluster: 3 Elixir, 2 Rust, loopback)

      200 role additions, the origin rotating over the 5 nodes; for each, the time
      from just before `add_role` on the origin (`:os.system_time` there, or the
      Rust clock) to the `on_role_added` / `RoleAdded` event on each of the 4 other
      nodes (stamped by the event handler with the same system clock): 800
      latencies. Then three Elixir nodes holding roles are `kill -9`-ed one after
      the other: time from the kill to their roles gone and `on_node_removed` on
      all 5 nodes. (0.5.1 has no event-time figure to compare with here: its
      broadcast is one message as ours is; see figure 4 for its repair traffic.)

      ![propagation](bench_propagation.png)

      #{table(["origin → receiver", "samples", "p50", "p99", "max"], rows)}

      kill -9: time until the victim's roles are gone everywhere (5 receivers each)

      #{table(["", "first node", "median node", "last node"], krows)}
      """
    end
  end

  def idle(terms, plots) do
    rows =
      for n <- [3, 5], s <- [1, 3] do
        o = Enum.find(terms, &match?({:idle, :ours, ^n, ^s, _, _}, &1))
        b = Enum.find(terms, &match?({:idle, :legacy, ^n, ^s, _, _}, &1))
        {n, s, o, b}
      end
      |> Enum.filter(fn {_, _, o, b} -> o && b end)

    dat =
      for {n, s, {_, _, _, _, om, _}, {_, _, _, _, bm, _}} <- rows,
          do: "\"N=#{n} S=#{s}\" #{om} #{bm} #{n * (n - 1) * s}"

    File.write!(Path.join(plots, "idle.dat"), Enum.join(dat, "\n") <> "\n")

    File.write!(Path.join(plots, "idle.gp"), """
    set terminal pngcairo size 800,500 noenhanced font "DejaVu Sans,10"
    set output "bench_idle.png"
    set title "Idle sync: distribution messages per pull interval, whole cluster"
    set style data histograms
    set style histogram clustered gap 1
    set style fill solid 0.8 border -1
    set ylabel "messages / interval"
    set key top left
    plot "idle.dat" using 2:xtic(1) title "ours", "" using 3 title "0.5.1 stand-in", "" using 4 title "N(N-1)S erpc calls"
    """)

    """
    ## 4. Idle sync traffic

    N Elixir nodes (our library, or the 0.5.1 stand-in `test/legacy`), one role
    each in each of S scopes, pull interval 1 s; after convergence and 3 quiet
    intervals, `:inet.getstat(port, [:send_cnt, :send_oct])` on every
    distribution port between cluster nodes (`:erlang.system_info(:dist_ctrl)`,
    the benchmark's own hidden node excluded), summed over nodes, over 5 s,
    per interval. A message here is a distribution packet (a signal: send,
    spawn request, reply...). 0.5.1 makes N(N-1)S generation erpc calls per
    interval.

    ![idle](bench_idle.png)

    #{table(["N", "S", "ours msgs/interval", "ours bytes/interval", "0.5.1 msgs", "0.5.1 bytes", "N(N-1)S erpc", "ratio msgs", "ratio bytes"], for({n, s, {_, _, _, _, om, ob}, {_, _, _, _, bm, bb}} <- rows, do: ["#{n}", "#{s}", f(om), "#{round(ob)}", f(bm), "#{round(bb)}", "#{n * (n - 1) * s}", ratio(bm / max(om, 0.01)), ratio(bb / max(ob, 0.01))]))}
    """
  end

  def throughput(terms, plots) do
    dirs = [:beam_to_beam, :rust_to_beam, :beam_to_rust]

    rows =
      for d <- dirs, l = for({:throughput, ^d, n, us} <- terms, do: n / (us / 1.0e6)), l != [] do
        {d, l}
      end

    bb = Enum.find_value(rows, fn {d, l} -> d == :beam_to_beam && median(l) end)
    dat = for {d, l} <- rows, do: "\"#{d}\" #{median(l)}"
    File.write!(Path.join(plots, "tp.dat"), Enum.join(dat, "\n") <> "\n")

    File.write!(Path.join(plots, "tp.gp"), """
    set terminal pngcairo size 700,450 noenhanced font "DejaVu Sans,10"
    set output "bench_throughput.png"
    set title "Distribution throughput, small messages (median of runs)"
    set style fill solid 0.8 border -1
    set boxwidth 0.6
    set ylabel "messages/s"
    set yrange [0:*]
    plot "tp.dat" using 0:2:xtic(1) with boxes notitle
    """)

    """
    ## 5. Distribution throughput

    100,000 messages `{:m, i, from_pid, last, <<16 bytes>>}` from one process to
    a registered process on another node, until the receiver acknowledges the
    last one; 5 runs per direction, interleaved; same loopback, same run.
    Rust = a `cnode` mailbox.

    ![throughput](bench_throughput.png)

    #{table(["direction", "median msgs/s", "min", "max", "vs BEAM → BEAM"], for({d, l} <- rows, do: ["#{d}", rate(median(l)), rate(Enum.min(l)), rate(Enum.max(l)), ratio(median(l) / bb)]))}
    """
  end

  def scale(terms, plots) do
    rows =
      Enum.sort(
        for {:scale, k, p, conv, ex, mesh, kb, rkb} <- terms, do: {k, p, conv, ex, mesh, kb, rkb}
      )

    dat = for {k, _, conv, _, _, kb, _} <- rows, do: "#{k} #{conv} #{kb / 1024}"
    File.write!(Path.join(plots, "scale.dat"), Enum.join(dat, "\n") <> "\n")

    File.write!(Path.join(plots, "scale.gp"), """
    set terminal pngcairo size 800,500 noenhanced font "DejaVu Sans,10"
    set output "bench_scale.png"
    set title "K Rust nodes + 2 Elixir nodes, each adds 10 roles"
    set xlabel "K"
    set ylabel "ms until every node sees every role"
    set y2label "MiB resident per Rust node"
    set ytics nomirror
    set y2tics
    set grid
    set key top left
    plot "scale.dat" using 1:2 with linespoints lw 2 title "convergence (ms)", "" using 1:3 axes x1y2 with linespoints lw 2 title "VmRSS / K (MiB)"
    """)

    """
    ## 6. Scale

    K Rust nodes (`cnode` + `ClusterHelper`, in the default scope, no roles yet)
    plus 2 Elixir nodes in a full mesh; when the mesh is up (and 3 s more), every
    node adds 10 roles at once; time until every node's index holds all
    (K+2) x 10 entries. Memory: VmRSS growth of the Rust process(es) since before
    the first node started, divided by K. Each Rust process holds at most as
    many nodes as its open-file limit allows in a full mesh (two sockets per
    in-process pair, `ulimit -n` = 20000 here, not raisable): **K = 200 does not fit
    in one process on this machine** and runs as several processes.

    ![scale](bench_scale.png)

    #{table(["K", "Rust processes", "convergence, all nodes", "convergence, Elixir nodes", "mesh set-up", "RSS per Rust node, converged", "RSS per Rust node, meshed before roles"], for({k, p, conv, ex, mesh, kb, rkb} <- rows, do: ["#{k}", "#{p}", "#{f(conv)} ms", "#{f(ex)} ms", "#{f(mesh / 1000)} s", "#{f(kb / 1024)} MiB", "#{f(rkb / 1024)} MiB"]))}
    """
  end

  def parse_criterion(file) do
    text = if File.exists?(file), do: File.read!(file), else: ""

    Regex.scan(~r/^(\S+)\s*\n?\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]/m, text)
    |> Enum.map(fn [_, name, lo, lu, mid, mu, hi, hu] -> {name, {lo, lu}, {mid, mu}, {hi, hu}} end)
  end

  def criterion([]), do: "## 7. Core microbenchmarks\n\nNot measured in this run.\n"

  def criterion(rows) do
    """
    ## 7. Core microbenchmarks (criterion, `native/cluster_helper_core/benches/core.rs`)

    The Rust index alone (no NIF, no term conversion): criterion's estimate and
    its confidence interval (short runs: 0.5 s warm-up, 1.5 s measurement).
    `index_read` is per call on `n` nodes x 10 roles; `index_write/add_remove_one`
    is one add plus one remove on a node holding 110 / 1,010 / 10,010 roles.

    #{table(["benchmark", "estimate", "interval"], for({name, {lo, lu}, {mid, mu}, {hi, hu}} <- rows, do: ["`#{name}`", "#{mid} #{mu}", "#{lo} #{lu} – #{hi} #{hu}"]))}
    """
  end

  def notes do
    """
    ## Where we lose, and why

    Every ratio below 1 in the tables above is a loss; they are not hidden.
    What causes them (measured on this machine while writing this page; the
    code is in `native/cluster_helper_nif/src/lib.rs`):

    - **Small results (`get_roles`: 10 roles; `get_nodes` on 1 node).** About
      190 ns of fixed NIF cost per read (resource, scope and node names turned
      into Rust strings, snapshot load, two map lookups) plus a per-role cost to
      build the role term: measured at commit ed0107d, 10 atom roles take
      ~780 ns (`Native.get_roles`) against ~540 ns for 0.5.1's lookup, 10
      `{:role, i}` tuples ~1.25 µs against ~650 ns, and an ETS lookup of 10
      objects itself is ~11 ns. Before ed0107d (atoms through the atom table,
      other roles through `binary_to_term`) it was ~1.5 µs for 10 atoms. The
      rest of the gap is term building for non-atom roles; caching role terms
      (an owned env, copied with `enif_make_copy`) would close more of it.
      `get_nodes` with a small result also canonicalises the role argument on
      every call (`term_to_binary` + `canonicalize` for anything but atoms and
      small integers): on one node, 310 ns vs 218 ns for an atom role,
      475 ns vs 243 ns for `{:role, 3}`. `get_my_roles` ties with or beats
      0.5.1's `GenServer.call` for one reader and wins 3× in calls/s with 8
      (0.5.1's one process is the bottleneck).
    - **Many-node reads with 2+ readers, before ed0107d (fixed).**
      `nodes_to_list` took the `atoms` `std::sync::RwLock` read lock once per
      node: 1,000 lock/unlock pairs per call on one cache line, bounced
      between the two cores when two readers really ran in parallel. In two
      of three full runs before the fix, `get_nodes` on 1,000 nodes with 2
      readers took 304-330 µs per call (7.0-7.6k calls/s, 0.5.1: 23-25k)
      against 47 µs with one. ed0107d loads the atom cache once per call
      (arc-swap); since then the same case runs at 43 µs per call and ~41k
      calls/s with 2 readers (1.8× 0.5.1).
    - **Single writes on a small node (`remove_role` with 110 roles, bulk add of 100).**
      Every write goes through our server and a dirty-CPU NIF call (a scheduler
      hop each way) that runs the engine, computes actions and broadcasts;
      0.5.1 does two `:ets.delete_object/2` in its GenServer. From ~1,000
      roles up, 0.5.1's `:bag` (O(k) per insert or delete under one key, and
      `:compressed`) loses by one to three orders of magnitude.
    - **Rust → BEAM messages** are slower than BEAM → BEAM (0.62-0.70× in
      four runs; BEAM → Rust 0.76-1.03×). Likely cause (read in the code, not
      profiled): every message is encoded into its own `Vec<u8>`, queued on an
      unbounded channel, and written by the connection task with one
      `write_all` (one syscall) per message (`native/cnode/src/connection.rs`),
      where the BEAM batches queued distribution output. Draining the queue
      (`try_recv`) into one buffer per write would batch the same way.
    - **Scale**: K = 200 needs more sockets (two per in-process pair) than one
      process may open here; and setting up a 200-node mesh from one seed
      takes tens of seconds (figure 6, *mesh set-up*).
    - **Joining and adding at once** (found while preparing figure 6, since
      fixed by another change): when every node joined the scope *by* adding
      its roles, all at the same moment, some broadcasts were missed and the
      cluster converged only at the next periodic pull (3.9-6.9 s with the
      7 s default, K = 6..50). With the engine change d5a798b ("a new ours
      member gets our snapshot pushed") the same run converges in 0.76-0.83 s
      at K = 50 and 18 ms at K = 6 (`CHBENCH_JOIN_ON_ADD=1 chbench scale OUT K`
      reproduces it); figure 6 joins the scope first, as a configured service
      does (0.15-0.19 s at K = 50).

    ## How to read this / caveats

    - Same VM, same data for figures 1-2; the baseline is `bench/baseline_051.ex`,
      a re-creation of 0.5.1's layout and read path, not the 0.5.1 package itself.
    - Figure 4's 0.5.1 side is the wire-exact stand-in `test/legacy/cluster_helper_051.ex`.
    - Rust nodes in figures 3, 5, 6 are in-process `cnode` nodes on a 2-worker tokio runtime.
    - The machine is shared with other work; medians and p99 are over the samples of this run only.
    """
  end
end

Bench.Report.main(System.argv())
