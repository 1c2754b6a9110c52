/// Lowering: the checked model (vector equations with index variables) becomes scalar IR per
/// engine component (indices evaluated, periodic wrapping applied, reductions unrolled).
module Sde.Lang.Lower

open System
open Sde.Lang.Checked
open Sde.Lang.Ir

/// How one component starts.
type InitIr =
    | InitDet of Sym
    | InitNormal of mean: Sym * sd: Sym
    | InitUniform of lo: Sym * hi: Sym

/// A diffusion entry g[row, lane] (sparse: only the non-zeros).
type DiffEntry = { Row: int; Lane: int; Coeff: Sym }

/// Components `Target + i`, for i in each half-open range of `Ranges`, computed by one loop over i
/// instead of code per component (`Loops`). `Drift` and `Gw` (the diffusion applied to the noise,
/// Σ_l g_kl w_l) are templates whose `StateAt`/`NoiseAt` leaves are relative to i; instantiated at
/// any i of the ranges they are the trees the unrolled lowering builds for component Target + i.
/// Those rows have `zero` drift and no diffusion entries in `ModelIr.Drift` / `ModelIr.Diffusion`.
type LoopIr =
    { Target: int
      Ranges: (int * int) list
      Drift: Sym
      Gw: Sym }

/// The inits of components `Target + i`, i in `Ranges`, from one template (`ExtAt` lanes relative
/// to i). `ModelIr.Init` still holds every component's law.
type InitLoopIr =
    { Target: int
      Ranges: (int * int) list
      Value: Sym }

/// The one-step map the engines iterate (`simulate { scheme = ... }`, docs/discretisation.md).
type Scheme =
    /// x + f Δt + g ΔW: strong order 1/2, weak order 1.
    | EulerMaruyama
    /// Euler plus ½ Σ_jk (L^j g_·k)(ΔW_j ΔW_k − δ_jk Δt): strong order 1 for commutative noise.
    | Milstein
    /// Rößler's SRA1 for additive noise: strong order 1.5, weak order 2; a second normal per noise
    /// lane and step (the engines draw 2m lanes, `noiseLanes`).
    | Sra

/// The scalar form of a model: everything the emitter and the derivative generator need.
type ModelIr =
    { Name: string
      Dim: int
      NoiseDim: int
      ParamNames: string[]
      /// Name of each engine component, e.g. `x[3]` or `q`.
      ComponentNames: string[]
      Drift: Sym[]
      Diffusion: DiffEntry list
      Init: InitIr[]
      /// Rows computed by loops (empty unless `Loops.lowerModel` chose them; then the model has no
      /// derivative code, see `Compile.compile`).
      Loops: LoopIr list
      InitLoops: InitLoopIr list
      /// The one-step map (Euler unless the driver sets another; a non-Euler model has no loops).
      Scheme: Scheme }

type private Env = Map<string, int>

/// Index arithmetic in 64 bits, checked: a product of two in-range literals (65536 * 65536) must not
/// wrap silently (it did in 32 bits, and the checker computes in 64).
let rec evalIndex (env: Env) (e: IExpr) : int64 =
    match e with
    | IConst c -> int64 c
    | IVar v ->
        match env.TryFind v with
        | Some i -> int64 i
        | None -> failwithf "unbound index variable '%s' (the checker should have caught this)" v
    | IAdd (a, b) -> Checked.(+) (evalIndex env a) (evalIndex env b)
    | ISub (a, b) -> Checked.(-) (evalIndex env a) (evalIndex env b)
    | IMul (a, b) -> Checked.(*) (evalIndex env a) (evalIndex env b)
    | INeg a -> Checked.(~-) (evalIndex env a)

let private wrap (n: int) (i: int64) = int (((i % int64 n) + int64 n) % int64 n)

/// The model's states as an array, made once per model (indexing the list was linear per
/// reference: quadratic with thousands of states).
let private statesOf =
    let cache = Runtime.CompilerServices.ConditionalWeakTable<StateInfo list, StateInfo[]>()
    fun (m: CheckedModel) -> cache.GetValue(m.States, fun l -> List.toArray l)

/// Engine component of `state[index]`.
let componentOf (m: CheckedModel) (env: Env) (s: int) (index: IExpr) : int =
    let st = (statesOf m)[s]
    let i = evalIndex env index

    if not st.Periodic && (i < 0L || i >= int64 st.Size) then
        failwithf "index %d out of range for '%s' (size %d)" i st.Name st.Size

    st.Offset + (if st.Periodic then wrap st.Size i else int i)

let private unaryOf f =
    match f with
    | Exp -> UExp
    | Log -> ULog
    | Sqrt -> USqrt
    | Sin -> USin
    | Cos -> UCos
    | Tan -> UTan
    | Tanh -> UTanh
    | Abs -> UAbs
    | Floor -> UFloor
    | _ -> failwithf "not a unary function: %A" f

/// How the lowering resolves the leaves that depend on index variables: the plain lowering
/// evaluates every index (`concreteLeaves`); a loop body keeps its index symbolic (`Loops`).
type Leaves =
    { StateRef: Map<string, int> -> int -> IExpr -> Sym
      IndexValue: Map<string, int> -> IExpr -> Sym
      /// The reductions without free index variables lowered so far, by reference: an equation
      /// `d x[i] = (avg(j, x[j]) - x[i]) dt` over n components lowers its average once, not n times
      /// (n² work for a mean-field coupling).
      Closed: Collections.Generic.Dictionary<CExpr, Sym>
      /// A reduction `sum(v, body)` over n terms as the template of one loop (`SumLoop`), or None to
      /// unroll it (`Loops.observable`).
      Reduction: string -> int -> CExpr -> Sym option }

let private concreteLeaves (m: CheckedModel) =
    { StateRef = fun env s ix -> state (componentOf m env s ix)
      IndexValue = fun env ix -> num (float (evalIndex env ix))
      Closed = Collections.Generic.Dictionary<CExpr, Sym>(HashIdentity.Reference)
      Reduction = fun _ _ _ -> None }

/// Does the expression use no index variable outside `bound`?
let rec closedIn (bound: Set<string>) (e: CExpr) : bool =
    let rec ix (i: IExpr) =
        match i with
        | IConst _ -> true
        | IVar v -> bound.Contains v
        | IAdd (a, b) | ISub (a, b) | IMul (a, b) -> ix a && ix b
        | INeg a -> ix a

    let rec cond (c: CCond) =
        match c with
        | CCmp (_, a, b) -> closedIn bound a && closedIn bound b
        | CAnd (a, b) | COr (a, b) -> cond a && cond b
        | CNot a -> cond a

    match e with
    | CExpr.Const _ | CExpr.Param _ | CExpr.Time -> true
    | CExpr.StateRef (_, i) | CExpr.IndexValue i | CExpr.ParamAt (_, _, i) -> ix i
    | CExpr.Neg a -> closedIn bound a
    | CExpr.Add (a, b) | CExpr.Sub (a, b) | CExpr.Mul (a, b) | CExpr.Div (a, b) | CExpr.Power (a, b) -> closedIn bound a && closedIn bound b
    | CExpr.Func (_, args) -> List.forall (closedIn bound) args
    | CExpr.IfThen (c, a, b) -> cond c && closedIn bound a && closedIn bound b
    | CExpr.SumOver (v, _, body) | CExpr.AvgOver (v, _, body) -> closedIn (bound.Add v) body

/// Lower an expression with the given leaf resolution (the one lowering that both the unrolled code
/// and the loop templates use, so that their trees agree).
let rec lowerWith (leaves: Leaves) (m: CheckedModel) (env: Env) (e: CExpr) : Sym =
    let go = lowerWith leaves m env
    let lowerExpr = lowerWith leaves
    let lowerCond = lowerCondWith leaves

    match e with
    | CExpr.Const v -> num v
    | CExpr.Param i -> param i
    | CExpr.ParamAt (first, _, ix) ->
        // the index's value through the leaves: a loop template whose index depends on the loop
        // variable raises there (and the equation is unrolled)
        match (leaves.IndexValue env ix).Op with
        | Num k -> param (first + int k)
        | _ -> failwith "a vector param's index did not evaluate to a number"
    | CExpr.StateRef (s, ix) -> leaves.StateRef env s ix
    | CExpr.Time -> time
    | CExpr.IndexValue ix -> leaves.IndexValue env ix
    | CExpr.Neg a -> neg (go a)
    | CExpr.Add _
    | CExpr.Sub _ ->
        // a chain a + b - c + ...: its terms gathered down the left spine without recursion and
        // summed at once (n binary additions would copy the growing sum n times)
        let terms = Collections.Generic.List<Sym>()
        let mutable node = e
        let mutable going = true

        while going do
            match node with
            | CExpr.Add (a, b) ->
                terms.Add(go b)
                node <- a
            | CExpr.Sub (a, b) ->
                terms.Add(neg (go b))
                node <- a
            | first ->
                terms.Add(go first)
                going <- false

        terms.Reverse()
        sumAll terms
    | CExpr.Mul (a, b) -> mul (go a) (go b)
    | CExpr.Div (a, b) -> div (go a) (go b)
    | CExpr.Power (a, b) -> pow (go a) (go b)
    | CExpr.Func (Fn.Pow, [ a; b ]) -> pow (go a) (go b)
    | CExpr.Func (Fn.Min, [ a; b ]) -> minS (go a) (go b)
    | CExpr.Func (Fn.Max, [ a; b ]) -> maxS (go a) (go b)
    | CExpr.Func (Sigmoid, [ a ]) -> div one (add one (unary UExp (neg (go a))))
    | CExpr.Func (f, [ a ]) -> unary (unaryOf f) (go a)
    | CExpr.Func (f, args) -> failwithf "function %A with %d arguments" f args.Length
    | CExpr.IfThen (c, a, b) -> select (lowerCond m env c) (go a) (go b)
    | CExpr.SumOver _
    | CExpr.AvgOver _ when not (isNull leaves.Closed) && leaves.Closed.ContainsKey e -> leaves.Closed[e]
    | CExpr.SumOver _
    | CExpr.AvgOver _ when not (isNull leaves.Closed) && closedIn Set.empty e ->
        // (lowered without the table, which the reductions inside it do not need)
        let r = lowerWith { leaves with Closed = null } m env e
        leaves.Closed[e] <- r
        r
    | CExpr.SumOver (v, n, body) ->
        match leaves.Reduction v n body with
        | Some t -> sumLoop n t
        | None -> [ 0 .. n - 1 ] |> List.map (fun j -> lowerExpr m (env.Add(v, j)) body) |> sumAll
    | CExpr.AvgOver (v, n, body) ->
        let s =
            match leaves.Reduction v n body with
            | Some t -> sumLoop n t
            | None -> [ 0 .. n - 1 ] |> List.map (fun j -> lowerExpr m (env.Add(v, j)) body) |> sumAll

        mul (num (1.0 / float n)) s

and lowerCondWith (leaves: Leaves) (m: CheckedModel) (env: Env) (c: CCond) : Sym =
    let lowerExpr = lowerWith leaves
    let lowerCond = lowerCondWith leaves

    match c with
    | CCmp (op, a, b) -> cmp op (lowerExpr m env a) (lowerExpr m env b)
    | CAnd (a, b) -> andS (lowerCond m env a) (lowerCond m env b)
    | COr (a, b) -> orS (lowerCond m env a) (lowerCond m env b)
    | CNot a -> notS (lowerCond m env a)

let private lowerExpr (m: CheckedModel) (env: Env) (e: CExpr) : Sym = lowerWith (concreteLeaves m) m env e

/// Lower an observable (no free index variables).
let observable (m: CheckedModel) (e: CExpr) : Sym = lowerExpr m Map.empty e

/// The index values an equation or init with optional index variable ranges over.
/// (A sequence: a skipped component costs no environment.)
let private instances (st: StateInfo) (index: string option) : (int * Env) seq =
    match index with
    | Some v -> seq { for i in 0 .. st.Size - 1 -> st.Offset + i, Map.ofList [ v, i ] }
    | None when st.Size = 1 -> Seq.singleton (st.Offset, Map.empty)
    | None ->
        // `init x = e` for a vector state without index: the same value for every component
        seq { for i in 0 .. st.Size - 1 -> st.Offset + i, Map.empty }

/// Most terms b_jk ∂_j b_ik of the Stratonovich-to-Itô conversion.
let maxItoTerms = 10_000_000L

/// A Stratonovich model whose conversion would pass `maxItoTerms` (the message says so).
exception TooManyItoTerms of string

/// The Itô drift of the Stratonovich SDE dx = f dt + g ∘ dW with the same law:
/// f_i + ½ Σ_l Σ_j g_jl ∂_j g_il (l the noise lanes, j the state components), with the symbolic
/// derivative. Only the pairs where g_il reads x_j and row j has noise on lane l contribute, so the
/// work is the number of such (i, j, l), not dim² × noise lanes.
let itoDrift (drift: Sym[]) (diffusion: DiffEntry list) : Sym[] =
    let entry = Collections.Generic.Dictionary<struct (int * int), Sym>()

    for e in diffusion do
        entry[struct (e.Row, e.Lane)] <- e.Coeff

    // bounded like the derivatives of the step (`Tangent.maxDerivativeEntries`): a dense noise that
    // reads every state has n³ terms, which no compile of n = 1000 would finish
    let count =
        diffusion |> List.sumBy (fun e -> stateDeps e.Coeff |> Array.sumBy (fun j -> if entry.ContainsKey(struct (j, e.Lane)) then 1L else 0L))

    if count > maxItoTerms then
        raise (TooManyItoTerms(sprintf "the Stratonovich-to-Itô correction has %d terms b_jk d_j b_ik; at most %d (a noise that reads every one of n states on every lane has n^3)" count maxItoTerms))

    let terms = Array.init drift.Length (fun _ -> Collections.Generic.List<Sym>())

    for e in diffusion do
        for j in stateDeps e.Coeff do
            match entry.TryGetValue(struct (j, e.Lane)) with
            | true, gj -> terms[e.Row].Add(mul gj (derivative (State j) e.Coeff))
            | _ -> ()

    drift |> Array.mapi (fun i f -> if terms[i].Count = 0 then f else add f (mul (num 0.5) (sumAll terms[i])))

/// Lower a model, except the rows whose equation `skipRow` says a loop computes (zero drift, no
/// diffusion) and the components whose init `skipInit` says a loop sets (`InitDet zero` until the
/// caller fills in the law): `Loops` chooses them.
let lowerModelExcept (skipRow: int -> bool) (skipInit: int -> bool) (m: CheckedModel) : ModelIr =
    // one table of closed reductions for every equation and init
    let leaves = concreteLeaves m
    let lowerExpr m env e = lowerWith leaves m env e
    let drift = Array.create m.Dim zero
    let diffusion = Collections.Generic.Dictionary<struct (int * int), Sym>()
    let lanes = Collections.Generic.List<struct (int * int)>()

    let states = statesOf m
    let brownians = List.toArray m.Brownians

    for eq in m.Equations do
        let st = states[eq.State]

        for k, env in instances st eq.Index |> Seq.filter (fun (k, _) -> not (skipRow k)) do
            drift[k] <- lowerExpr m env eq.Drift

            for term in eq.Noise do
                let br = brownians[term.Brownian]
                let lane = br.Offset + int (evalIndex env term.Index)
                let c = lowerExpr m env term.Coeff
                let key = struct (k, lane)

                match diffusion.TryGetValue key with
                | true, prev -> diffusion[key] <- add prev c
                | _ ->
                    diffusion[key] <- c
                    lanes.Add key

    let init = Array.create m.Dim (InitDet zero)

    for ini in m.Inits do
        let st = states[ini.State]

        for k, env in instances st ini.Index |> Seq.filter (fun (k, _) -> not (skipInit k)) do
            init[k] <-
                match ini.Kind with
                | Deterministic e -> InitDet(lowerExpr m env e)
                | Normal (a, b) -> InitNormal(lowerExpr m env a, lowerExpr m env b)
                | Uniform (a, b) -> InitUniform(lowerExpr m env a, lowerExpr m env b)

    let entries =
        [ for struct (r, l) in lanes do
              let c = diffusion[struct (r, l)]
              if not (isZero c) then { Row = r; Lane = l; Coeff = c } ]

    let drift =
        match m.Calculus with
        | Ito -> drift
        | Stratonovich ->
            // a skipped row's diffusion is not here, and the correction of the rows its noise meets
            // would silently miss it (`Loops` unrolls every row of a Stratonovich model)
            if Seq.exists skipRow (seq { 0 .. m.Dim - 1 }) then invalidArg "skipRow" "a Stratonovich model's rows are never looped"
            itoDrift drift entries

    let names =
        [| for st in m.States do
               if st.IsVector then
                   // (concatenation: sprintf costs about a second per million components)
                   for i in 0 .. st.Size - 1 -> st.Name + "[" + string i + "]"
               else
                   yield st.Name |]

    { Name = m.Name
      Dim = m.Dim
      NoiseDim = m.NoiseDim
      ParamNames = m.Params |> List.map (fun p -> p.Name) |> List.toArray
      ComponentNames = names
      Drift = drift
      Diffusion = entries
      Init = init
      Loops = []
      InitLoops = []
      Scheme = EulerMaruyama }

/// Lower a model with every component unrolled.
let lowerModel (m: CheckedModel) : ModelIr = lowerModelExcept (fun _ -> false) (fun _ -> false) m

/// The first `count` components' names and Itô drifts in `.sde` syntax (`dsl check --ito`): for a
/// Stratonovich model the converted drift that every estimator uses, for an Itô model the drift as
/// written (simplified).
let itoDrifts (count: int) (m: CheckedModel) : (string * string) list =
    let ir = lowerModel m

    let name (op: Op) =
        match op with
        | Param i -> ir.ParamNames[i]
        | State k -> ir.ComponentNames[k]
        | _ -> string op

    [ for k in 0 .. min count ir.Dim - 1 -> ir.ComponentNames[k], render name ir.Drift[k] ]

/// Does the expression read the state (a component, or one relative to a loop's index)?
let rec private readsState (e: Sym) =
    match e.Op with
    | State _ | StateAt _ -> true
    | _ -> List.exists readsState e.Args

/// Is the diffusion additive (independent of the state)?
let additiveNoise (ir: ModelIr) =
    ir.Diffusion |> List.forall (fun d -> (stateDeps d.Coeff).Length = 0)
    && ir.Loops |> List.forall (fun l -> not (readsState l.Gw))

/// Which components the loops cover: `ranges` gives each loop's first component and ranges of i.
let coveredBy (dim: int) (ranges: (int * (int * int) list) seq) : bool[] =
    let covered = Array.zeroCreate dim

    for target, rs in ranges do
        for lo, hi in rs do
            for i in lo .. hi - 1 do
                covered[target + i] <- true

    covered

/// The rows that equation loops compute.
let loopedRows (ir: ModelIr) =
    coveredBy ir.Dim (ir.Loops |> Seq.map (fun l -> l.Target, l.Ranges))

/// The components that init loops set.
let loopedInits (ir: ModelIr) =
    coveredBy ir.Dim (ir.InitLoops |> Seq.map (fun l -> l.Target, l.Ranges))

/// One Euler step x + f dt + gw sqdt (for a component, and for a loop's template alike).
let eulerStep (x: Sym) (f: Sym) (gw: Sym) =
    add x (add (mul f (ext "dt" 0)) (mul gw (ext "sqdt" 0)))

/// The initial value from its law, with `zn`/`zu` the component's normal and uniform lanes.
let initValue (init: InitIr) (zn: Sym) (zu: Sym) =
    match init with
    | InitDet e -> e
    | InitNormal (m, s) -> add m (mul s zn)
    | InitUniform (a, b) -> add a (mul (sub b a) zu)

/// (g w)_k = Σ_l g_kl w_l, against the Noise leaves.
let diffusionApplied (ir: ModelIr) : Sym[] =
    let gw = Array.create ir.Dim zero

    for d in ir.Diffusion do
        gw[d.Row] <- add gw[d.Row] (mul d.Coeff (noise d.Lane))

    gw

/// The Euler step G_k = x_k + f_k dt + (g w)_k sqdt, against the leaves State / Noise / Ext("dt"|"sqdt").
let private eulerExpressions (ir: ModelIr) : Sym[] =
    let gw = diffusionApplied ir
    Array.init ir.Dim (fun k -> eulerStep (state k) ir.Drift[k] gw[k])

let schemeName (s: Scheme) =
    match s with
    | EulerMaruyama -> "euler_maruyama"
    | Milstein -> "milstein"
    | Sra -> "sra"

let schemeOfName (name: string) =
    match name with
    | "milstein" -> Milstein
    | "sra" -> Sra
    | _ -> EulerMaruyama

/// Noise lanes the engines draw per step (`ISdeModel.NoiseDim`): SRA reads a second normal per
/// lane, lanes m .. 2m − 1 after the m lanes of ΔW. A lane's normal depends only on its index
/// (`Normals.Fill`), so lanes 0 .. m − 1 are the Euler run's: common random numbers across schemes.
let noiseLanes (ir: ModelIr) = if ir.Scheme = Sra then 2 * ir.NoiseDim else ir.NoiseDim

/// Most terms g_lj ∂_l g_ik of Milstein's correction (like `maxItoTerms`).
let maxMilsteinTerms = maxItoTerms

/// A Milstein model whose correction would pass `maxMilsteinTerms`.
exception TooManyMilsteinTerms of string

/// Milstein's coefficients L^j g_ik = Σ_l g_lj ∂_l g_ik, keyed (row i, lane j, lane k), structural
/// zeros absent (only the states l that g_ik reads and that carry noise on lane j contribute).
let milsteinCoefficients (ir: ModelIr) : Collections.Generic.Dictionary<struct (int * int * int), Sym> =
    let rowLanes = Collections.Generic.Dictionary<int, Collections.Generic.List<int * Sym>>()

    for e in ir.Diffusion do
        match rowLanes.TryGetValue e.Row with
        | true, l -> l.Add((e.Lane, e.Coeff))
        | _ -> rowLanes[e.Row] <- Collections.Generic.List [ (e.Lane, e.Coeff) ]

    let count =
        ir.Diffusion |> List.sumBy (fun e -> stateDeps e.Coeff |> Array.sumBy (fun l -> match rowLanes.TryGetValue l with | true, ls -> int64 ls.Count | _ -> 0L))

    if count > maxMilsteinTerms then
        raise (TooManyMilsteinTerms(sprintf "Milstein's correction has %d terms g_lj d_l g_ik; at most %d (a noise that reads every one of n states on every lane has n^3); use scheme = euler_maruyama" count maxMilsteinTerms))

    let terms = Collections.Generic.Dictionary<struct (int * int * int), Collections.Generic.List<Sym>>()

    for e in ir.Diffusion do
        for l, dg in stateGradient e.Coeff do
            match rowLanes.TryGetValue l with
            | true, ls ->
                for j, glj in ls do
                    let key = struct (e.Row, j, e.Lane)
                    match terms.TryGetValue key with
                    | true, xs -> xs.Add(mul glj dg)
                    | _ -> terms[key] <- Collections.Generic.List [ mul glj dg ]
            | _ -> ()

    let out = Collections.Generic.Dictionary<struct (int * int * int), Sym>()

    for kv in terms do
        let c = sumAll kv.Value
        if not (isZero c) then out[kv.Key] <- c

    out

/// A normal form for comparing two expressions: the operands of sums and products ordered by
/// hash, recursively. Equal normal forms are equal functions.
let rec private normal (e: Sym) : Sym =
    let args = List.map normal e.Args

    match e.Op with
    | Add | Mul -> withArgs e (args |> List.sortBy (fun a -> a.Hash))
    | _ -> if args.IsEmpty then e else withArgs e args

/// The first (row, lane j, lane k), j < k, where L^j g_ik and L^k g_ij differ after simplification
/// (the noise is not commutative, as far as the compiler can prove), or None.
let nonCommutative (ir: ModelIr) : (int * int * int) option =
    let c = milsteinCoefficients ir
    let get key = match c.TryGetValue key with | true, v -> v | _ -> zero

    c.Keys
    |> Seq.collect (fun (struct (i, j, k)) -> [ (i, min j k, max j k) ])
    |> Seq.filter (fun (_, j, k) -> j <> k)
    |> Seq.distinct
    |> Seq.sort
    |> Seq.tryFind (fun (i, j, k) -> normal (get (struct (i, j, k))) <> normal (get (struct (i, k, j))))

/// Milstein's step: Euler plus ½ Δt Σ_jk L^j g_ik (w_j w_k − δ_jk), ΔW = √Δt w (exact for
/// commutative noise, where the iterated integrals I_jk + I_kj = ΔW_j ΔW_k − δ_jk Δt suffice).
let private milsteinExpressions (ir: ModelIr) : Sym[] =
    let euler = eulerExpressions ir
    let c = milsteinCoefficients ir
    let perRow = Array.init ir.Dim (fun _ -> Collections.Generic.List<Sym>())

    for kv in c |> Seq.sortBy (fun kv -> let struct (i, j, k) = kv.Key in i, j, k) do
        let struct (i, j, k) = kv.Key
        let ww = if j = k then sub (powi (noise j) 2) one else mul (noise j) (noise k)
        perRow[i].Add(mul kv.Value ww)

    euler
    |> Array.mapi (fun i g -> if perRow[i].Count = 0 then g else add g (mul (mul (num 0.5) (ext "dt" 0)) (sumAll perRow[i])))

/// Rößler's SRA1 (SIAM J. Numer. Anal. 48(3), 2010; the form of StochasticDiffEq.jl) for additive
/// noise g(t): χ_l = ½ (ΔW_l + ΔZ_l/√3) (I_(1,0)/Δt), H = x + ¾ f Δt + 3/2 g(t+Δt) χ,
/// x' = x + Δt (f(x, t)/3 + 2 f(H, t + ¾Δt)/3) + g(t+Δt) ΔW + (g(t) − g(t+Δt)) χ, with ΔW = √Δt w_l
/// and ΔZ = √Δt w_(m+l) independent. (The driver refuses a diffusion that reads the state.)
let private sraExpressions (ir: ModelIr) : Sym[] =
    let m = ir.NoiseDim
    let dt = ext "dt" 0
    let sqdt = ext "sqdt" 0
    let chi = Array.init m (fun l -> mul (mul (num 0.5) sqdt) (add (noise l) (mul (num (1.0 / sqrt 3.0)) (noise (m + l)))))
    let atTime (t: Sym) (e: Sym) = substitute (function Time -> Some t | _ -> None) e
    let later = add time dt
    let rows = Array.init ir.Dim (fun _ -> Collections.Generic.List<DiffEntry>())
    for e in ir.Diffusion do rows[e.Row].Add e

    let h =
        Array.init ir.Dim (fun i ->
            let noisePart = rows[i] |> Seq.map (fun e -> mul (atTime later e.Coeff) chi[e.Lane]) |> sumAll
            add (state i) (add (mul (num 0.75) (mul ir.Drift[i] dt)) (mul (num 1.5) noisePart)))

    let shifted = add time (mul (num 0.75) dt)
    let atH (e: Sym) = substitute (function State k -> Some h[k] | Time -> Some shifted | _ -> None) e

    Array.init ir.Dim (fun i ->
        let f0 = ir.Drift[i]
        let f1 = atH f0
        let drift = mul dt (add (mul (num (1.0 / 3.0)) f0) (mul (num (2.0 / 3.0)) f1))

        let noisePart =
            rows[i]
            |> Seq.map (fun e ->
                let gp = atTime later e.Coeff
                let dw = mul (mul gp sqdt) (noise e.Lane)
                if mentions Time e.Coeff then add dw (mul (sub e.Coeff gp) chi[e.Lane]) else dw)
            |> sumAll

        add (state i) (add drift noisePart))

/// The scheme's one-step map G_k(x, w), against the leaves State / Noise / Time / Ext("dt"|"sqdt"):
/// the emitted `Step` and, through its symbolic derivatives, the tangent (pathwise responses,
/// Lyapunov exponents).
let stepExpressions (ir: ModelIr) : Sym[] =
    match ir.Scheme with
    | EulerMaruyama -> eulerExpressions ir
    | Milstein -> milsteinExpressions ir
    | Sra -> sraExpressions ir

/// The step of the rows that no loop computes (`zero` in the `covered` rows, which cost nothing).
let stepExpressionsExcept (covered: bool[]) (ir: ModelIr) : Sym[] =
    match ir.Scheme with
    | EulerMaruyama ->
        let gw = diffusionApplied ir
        Array.init ir.Dim (fun k -> if covered[k] then zero else eulerStep (state k) ir.Drift[k] gw[k])
    | _ ->
        if Array.exists id covered then invalidArg "covered" "a model with another scheme than Euler has no loops"
        stepExpressions ir

/// The initial values of the components that no loop sets (`zero` in the `covered` ones).
let initExpressionsExcept (covered: bool[]) (ir: ModelIr) : Sym[] =
    ir.Init |> Array.mapi (fun k init -> if covered[k] then zero else initValue init (ext "zn" k) (ext "zu" k))

let initExpressions (ir: ModelIr) : Sym[] =
    ir.Init |> Array.mapi (fun k init -> initValue init (ext "zn" k) (ext "zu" k))

