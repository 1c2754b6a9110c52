/// Multilevel runs split into shards with a fixed level plan (docs/mlmc.md, "Shards"): the pilot's plan,
/// its whole run against its shards' merge (bit for bit, on other thread counts), the plan's result
/// against a closed form, and the refusals (no plan, another file's plan, a missing shard).
module Sde.Tests.MultilevelShardTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.CliTests

let private compile (text: string) =
    match SdeCompiler.Compile(text, "m.sde") with
    | Ok p -> p
    | Error ds -> failtestf "unexpected diagnostics: %A" (ds |> List.map (fun d -> d.Rendered))

/// GBM from S0 = 1 (E[S_T] = e^(mu T), E[S_T^2] = e^((2 mu + sigma^2) T)), two parameter sets.
let private gbm (simulate: string) =
    sprintf
        """model G {
  param mu = 0.05
  param sigma = 0.2
  state S
  brownian W
  init S = 1
  d S = mu * S dt + sigma * S dW
}
params wide { sigma = 0.2 }
params calm { sigma = 0.1 }
simulate { %s }
query {
  mean(S)
  variance(S)
  mean(max(S - 1, 0)) over [0.5, 1]
  d mean(S) / d mu with finite_difference(h = 0.01)
  density(S) on [0.6, 1.6] bins 4
}
"""
        simulate

let private tempDir (name: string) =
    let d = Path.Combine(Path.GetTempPath(), sprintf "dsl-mlmc-%s-%s" name (Guid.NewGuid().ToString("N").Substring(0, 8)))
    Directory.CreateDirectory d |> ignore
    d

let private opts threads = { Driver.defaultOptions with Threads = threads }

/// The pilot's plan, as written to and read back from its file: (plan, its text).
let private planOf (p: CompiledProgram) (text: string) =
    match Multilevel.makePlan p.Program text (opts 0) with
    | pf, _, _, [] ->
        let planText = Multilevel.planJson p.Program pf
        match Multilevel.parsePlan planText with
        | Ok pf -> pf, planText
        | Error m -> failtestf "the plan does not read back: %s" m
    | _, _, _, e :: _ -> raise e

/// The JSON of a multilevel report without its timings (the only part a merge may change).
let private strip (r: Report.RunReport) (i: Multilevel.Info) =
    let j = JsonNode.Parse(Multilevel.toJson { r with Seconds = 0.0; PathStepsPerSecond = 0.0 } i)
    for s in j.["sets"].AsArray() do
        for l in s.["levels"].AsArray() do
            l.AsObject().Remove "seconds" |> ignore
    j.ToJsonString()

let private whole (p: CompiledProgram) (pf: Multilevel.PlanFile) (threads: int) =
    match Multilevel.reportOfPlan p.Program pf (Multilevel.runPlan p.Program pf (opts threads) None) 0.0 with
    | r, i, [] -> r, i
    | _, _, e :: _ -> raise e

let private runShards (p: CompiledProgram) (text: string) (pf: Multilevel.PlanFile) (planText: string) (dir: string) (n: int) (threads: int) =
    for k in 0 .. n - 1 do
        let h = MultilevelShards.headerOf p.Program "m.sde" text Frontend.noOverrides { K = k; N = n } pf planText
        MultilevelShards.runShard p.Program h pf planText (opts threads) dir false |> ignore

let private merged (dir: string) =
    match MultilevelShards.merge [ dir ] with
    | Some (Ok (_, r, i, _)) -> r, i
    | Some (Error m) -> failtestf "merge refused: %s" m
    | None -> failtest "the shards were not recognised as a multilevel plan's"

[<Tests>]
let tests =
    testList
        "Multilevel shards"
        [ test "Multilevel shards: the merge of 3 and 7 shards is the whole plan's run bit for bit, on 1, 2 and 3 threads" {
              let text = gbm "accuracy = 0.05; dt = 0.25; paths = 200; T = 1; seed = 11; scheme = milstein"
              let p = compile text
              let pf, planText = planOf p text
              Expect.equal pf.Sets.Length 2 "a plan per parameter set"
              let r1, i1 = whole p pf 1
              let expected = strip r1 i1
              // the whole plan on other thread counts: the same numbers
              let r3, i3 = whole p pf 3
              Expect.equal (strip r3 i3) expected "the whole plan on 1 and 3 threads"
              // 7 shards: more shards than the finest levels have chunks of 64 samples (empty shares)
              let finest = pf.Sets |> List.map (fun sp -> (List.last sp.Levels).Paths) |> List.min
              Expect.isLessThan finest (7L * 64L) "a level with fewer chunks than shards"
              for n, threads in [ 3, 1; 7, 3 ] do
                  let dir = tempDir (sprintf "merge%d" n)
                  try
                      runShards p text pf planText dir n threads
                      let r, i = merged dir
                      Expect.equal (strip r i) expected (sprintf "%d shards on %d threads" n threads)
                  finally
                      Directory.Delete(dir, true)
          }

          test "Multilevel shards: the plan's run is within 4.5 reported errors of the closed forms, its errors within the target" {
              let text = gbm "accuracy = 0.015; dt = 0.25; paths = 200; T = 1; seed = 12; scheme = milstein"
              let p = compile text
              let pf, _ = planOf p text
              let r, i = whole p pf 0
              for set, (sigma: float), res in List.zip3 r.Sets [ 0.2; 0.1 ] i.Sets do
                  let ml = Option.get res.Result
                  let exact = [ exp 0.05; exp (0.1 + sigma * sigma) - exp 0.1 ]
                  for (q: Report.QueryOutcome), x, qt in List.zip3 (List.truncate 2 set.Results) exact (List.truncate 2 res.Queries) do
                      let e = ml.Targets[List.last qt.Targets].Error
                      Expect.isLessThan (abs (q.Value - x)) (4.5 * e) (sprintf "set %s, %s: %g against %g (error %g)" set.Name q.Query q.Value x e)
                      Expect.isLessThanOrEqual e 0.019 (sprintf "set %s, %s: the error estimate %g near the target 0.015" set.Name q.Query e)
                  // d E[S_T]/d mu = T e^(mu T)
                  let fd = set.Results[3]
                  let e = ml.Targets[List.last res.Queries[3].Targets].Error
                  Expect.isLessThan (abs (fd.Value - exp 0.05)) (4.5 * e) (sprintf "set %s: response %g against %g (error %g)" set.Name fd.Value (exp 0.05) e)
          }

          test "Multilevel shards: the command line (--plan-only, --shard K/N --plan, dsl merge) gives the JSON of dsl run --plan [slow tier]" {
              Tier.requireSlow "seven dsl processes"
              let dir = tempDir "cli"
              try
                  let file = Path.Combine(dir, "g.sde")
                  File.WriteAllText(file, gbm "accuracy = 0.05; dt = 0.25; paths = 100; T = 1; seed = 15; scheme = milstein")
                  let plan = Path.Combine(dir, "plan.json")
                  let ok (args: string list) =
                      let o = dsl args
                      Expect.equal o.Code 0 (describe args o)
                      o
                  ok [ "run"; file; "--plan-only"; "--plan"; plan; "--quiet" ] |> ignore
                  let whole = (ok [ "run"; file; "--plan"; plan; "--json"; "--quiet" ]).Out
                  for k in 0..1 do ok [ "run"; file; "--shard"; sprintf "%d/2" k; "--plan"; plan; "--out"; Path.Combine(dir, "sh"); "--quiet" ] |> ignore
                  let merged = (ok [ "merge"; Path.Combine(dir, "sh"); "--json"; "--quiet" ]).Out
                  let strip (json: string) =
                      let j = JsonNode.Parse(json).AsObject()
                      j.Remove "timing" |> ignore
                      for s in j.["sets"].AsArray() do
                          for l in s.["levels"].AsArray() do l.AsObject().Remove "seconds" |> ignore
                      j.ToJsonString()
                  Expect.equal (strip merged) (strip whole) "merged shards = the whole plan"
                  // without a plan: the located refusal (exit 2) that says how to make one
                  let o = dsl [ "run"; file; "--shard"; "0/2"; "--out"; Path.Combine(dir, "x") ]
                  Expect.equal o.Code 2 (describe [ "run --shard without --plan" ] o)
                  Expect.stringContains o.Err "g.sde:11:12: error: 'accuracy'" "located"
                  Expect.stringContains o.Err "--plan-only" "says how"
              finally
                  Directory.Delete(dir, true)
          }

          test "Multilevel shards: refusals (no plan, another file's plan, a damaged plan, a missing shard)" {
              let text = gbm "accuracy = 0.05; dt = 0.25; paths = 100; T = 1; seed = 13; scheme = milstein"
              let p = compile text
              // no plan: the located refusal says how to make one
              let m =
                  try
                      Driver.runShard p.Program Driver.defaultOptions { First = 0L; Count = 10L } |> ignore
                      ""
                  with :? NotSupportedException as e -> e.Message
              Expect.isMatch m @"^11:12: 'accuracy' " "located at the accuracy setting"
              Expect.stringContains m "--plan-only --plan" "says how to make a plan"
              let pf, planText = planOf p text
              // the plan of another seed (or source) is refused
              let other = gbm "accuracy = 0.05; dt = 0.25; paths = 100; T = 1; seed = 14; scheme = milstein"
              Expect.isSome (Multilevel.planProblem (compile other).Program other pf) "another seed's plan"
              Expect.isNone (Multilevel.planProblem p.Program text pf) "its own plan"
              Expect.isError (Multilevel.parsePlan (planText.Replace("\"paths\": ", "\"paths\": -"))) "negative paths"
              Expect.isError (Multilevel.parsePlan "{}") "not a plan"
              // a missing shard
              let dir = tempDir "missing"
              try
                  for k in [ 0; 2 ] do
                      let h = MultilevelShards.headerOf p.Program "m.sde" text Frontend.noOverrides { K = k; N = 3 } pf planText
                      MultilevelShards.runShard p.Program h pf planText (opts 0) dir false |> ignore
                  match MultilevelShards.merge [ dir ] with
                  | Some (Error m) -> Expect.stringContains m "missing shard 1 of 3" "names the missing shard"
                  | _ -> failtest "expected a refusal"
              finally
                  Directory.Delete(dir, true)
          } ]
