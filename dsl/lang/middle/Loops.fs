/// Loops over the index of vector equations. An equation `d x[i] = ...` over many components whose
/// body is the same for every i (state references `x[i + k]` and noise lanes `dW[i + k]`, constant
/// references, reductions; `i` never used as a number) is lowered once, as a template relative to
/// i, and emitted as a loop instead of code per component: compile time and memory stop growing
/// with the number of components. The components where the template would not be exactly the
/// unrolled tree are peeled and unrolled as before: the ends where a reference `x[i + k]` leaves
/// its vector (a periodic wrap), and the i at which two distinct parts of the template become the
/// same component (x[i] next to x[0] in one product, where the unrolled code writes x[0]^2). So the
/// results are bit for bit those of the unrolled code.
///
/// The templates are not differentiated: `Driver` uses loops only for files without derivative
/// queries (responses, Lyapunov exponents, alignment).
module Sde.Lang.Loops

open System
open System.Collections.Generic
open Sde.Lang.Checked
open Sde.Lang.Ir
open Sde.Lang.Lower

/// Equations and inits over fewer components than this stay unrolled: there straight-line code
/// compiles quickly and runs as fast (see the README's Limits for the measurements).
let defaultMinLoopSize = 2000

/// Most state components of a model with derivative queries (responses, Lyapunov exponents,
/// alignment): their derivative code is unrolled per component; at 10^5 components a response on
/// the Lorenz-96 ring compiles and runs in about a minute and 4 GB, and it grows linearly from there.
let maxDerivativeDim = Limits.derivativeDim

let derivativeDimMessage (dim: int) =
    sprintf "this model has %d state components; responses, Lyapunov exponents and alignment need derivative code for each, which is unrolled: at most %d components (mean and density queries alone run vector equations as loops, at any size)" dim maxDerivativeDim

/// The most distinct colliding indices (peeled components inside the loop's range) a loop accepts;
/// past it the equation is unrolled.
let private maxCollisions = 64

/// Products with more factors are not checked pairwise: their equation is unrolled.
let private maxFactorsChecked = 256

exception private NotUniform

/// `a*i + b` for the loop index `v` (other index variables from `env`), in checked 64-bit arithmetic
/// like `Lower.evalIndex`.
let rec private affine (env: Map<string, int>) (v: string) (e: IExpr) : int64 * int64 =
    match e with
    | IConst c -> 0L, int64 c
    | IVar x when x = v && not (env.ContainsKey x) -> 1L, 0L
    | IVar x ->
        match env.TryFind x with
        | Some k -> 0L, int64 k
        | None -> raise NotUniform
    | IAdd (a, b) ->
        let (a1, b1), (a2, b2) = affine env v a, affine env v b
        Checked.(+) a1 a2, Checked.(+) b1 b2
    | ISub (a, b) ->
        let (a1, b1), (a2, b2) = affine env v a, affine env v b
        Checked.(-) a1 a2, Checked.(-) b1 b2
    | IMul (a, b) ->
        match affine env v a, affine env v b with
        | (0L, c), (k, d)
        | (k, d), (0L, c) -> Checked.(*) c k, Checked.(*) c d
        | _ -> raise NotUniform
    | INeg a ->
        let a1, b1 = affine env v a
        Checked.(~-) a1, Checked.(~-) b1

/// The range of i in which every relative reference stays inside its vector (narrowed as the
/// template is lowered).
type private Interior(size: int) =
    member val Lo = 0L with get, set
    member val Hi = int64 size with get, set

    /// A reference to component `i + b` of a vector of `n`.
    member r.Within(b: int64, n: int) =
        r.Lo <- max r.Lo (-b)
        r.Hi <- min r.Hi (int64 n - b)

/// Lowers with index `v` symbolic, a reference `x[i + k]` becoming `StateAt(offset + k)`; raises
/// NotUniform for anything else that depends on i.
let private templateLeaves (m: CheckedModel) (v: string) (interior: Interior) : Leaves =
    let states = List.toArray m.States

    { StateRef =
        fun env s ix ->
            let st = states[s]

            match affine env v ix with
            | 0L, b when st.Periodic -> state (st.Offset + int (((b % int64 st.Size) + int64 st.Size) % int64 st.Size))
            | 0L, b when b >= 0L && b < int64 st.Size -> state (st.Offset + int b)
            | 1L, b when abs b <= int64 st.Size ->
                interior.Within(b, st.Size)
                stateAt (st.Offset + int b)
            | _ -> raise NotUniform
      IndexValue =
        fun env ix ->
            match affine env v ix with
            | 0L, b -> num (float b)
            | _ -> raise NotUniform
      Closed = Dictionary<CExpr, Sym>(HashIdentity.Reference)
      Reduction = fun _ _ _ -> None }

/// Whether two distinct subtrees of a template are equal at no i, at every i, or at one i.
type private Meet =
    | Never
    | Always
    | At of int64

let private meet a b =
    match a, b with
    | Never, _
    | _, Never -> Never
    | Always, r
    | r, Always -> r
    | At i, At j -> if i = j then At i else Never

/// At which i the template subtrees `a` and `b` are the same tree once i is substituted.
let rec private unify (a: Sym) (b: Sym) : Meet =
    if Object.ReferenceEquals(a, b) then
        Always
    else
        match a.Op, b.Op with
        | StateAt k, State c
        | State c, StateAt k
        | NoiseAt k, Noise c
        | Noise c, NoiseAt k -> At(int64 c - int64 k)
        | ExtAt (n, k), Ext (n2, c)
        | Ext (n2, c), ExtAt (n, k) when n = n2 -> At(int64 c - int64 k)
        | oa, ob when oa = ob && a.Args.Length = b.Args.Length ->
            if a.Args.IsEmpty then
                Always
            else
                let mutable r = Always
                let mutable xs = a.Args
                let mutable ys = b.Args

                while r <> Never && not xs.IsEmpty do
                    r <- meet r (unify xs.Head ys.Head)
                    xs <- xs.Tail
                    ys <- ys.Tail

                r
        | _ -> Never

/// Whether a template node depends on the loop index, memoised per node (a template is a DAG): `leaf`
/// decides the nodes it knows (Some), the others depend on it when one of their arguments does.
let dependsOnIndex (leaf: Op -> bool option) : Sym -> bool =
    let memo = Dictionary<Sym, bool>(HashIdentity.Reference)

    let rec go (e: Sym) =
        match memo.TryGetValue e with
        | true, r -> r
        | _ ->
            let r =
                match leaf e.Op with
                | Some r -> r
                | None -> List.exists go e.Args

            memo[e] <- r
            r

    go

/// The indexed references of a loop's template: its state, noise and external components at i + k.
let indexedLeaf (op: Op) =
    match op with
    | StateAt _ | NoiseAt _ | ExtAt _ -> Some true
    | _ -> None

/// The i in [0, size) at which a smart constructor of the unrolled lowering would have found two
/// parts of a template equal that the template keeps apart: two factors of one product (which the
/// unrolled code merges into a power) or the two branches of an `if` (which it folds). These are the
/// only structural equality tests the constructors make (`Ir.mul`, `Ir.select`).
let private collisions (size: int) (roots: Sym list) : Set<int> =
    let isRelative = dependsOnIndex indexedLeaf

    let seen = HashSet<Sym>(HashIdentity.Reference)
    let found = HashSet<int>()

    let check (a: Sym) (b: Sym) =
        if isRelative a || isRelative b then
            match unify a b with
            | At i when i >= 0L && i < int64 size -> found.Add(int i) |> ignore
            | _ -> ()

    let baseOf (s: Sym) =
        match s.Op, s.Args with
        | PowI n, [ x ] when n > 0 -> x
        | _ -> s

    let rec visit (e: Sym) =
        if seen.Add e then
            match e.Op, e.Args with
            | Mul, xs ->
                if xs.Length > maxFactorsChecked then raise NotUniform
                let bases = xs |> List.map baseOf |> List.toArray

                for p in 0 .. bases.Length - 1 do
                    for q in p + 1 .. bases.Length - 1 do
                        check bases[p] bases[q]
            | Select, [ _; a; b ] -> check a b
            | _ -> ()

            if found.Count > maxCollisions then raise NotUniform
            List.iter visit e.Args

    List.iter visit roots
    Set.ofSeq found

/// The ranges of i in the interior without the colliding indices; None when the template needs
/// too many peeled components or the interior is empty.
let private rangesOf (interior: Interior) (size: int) (roots: Sym list) (extraCuts: int64 list) : (int * int) list option =
    let lo, hi = max 0L interior.Lo, min (int64 size) interior.Hi

    if lo >= hi then
        None
    else
        let extra = extraCuts |> List.filter (fun i -> i >= lo && i < hi) |> List.map int |> Set.ofList
        let cuts = Set.union extra (collisions size roots) |> Set.filter (fun i -> int64 i >= lo && int64 i < hi)
        if cuts.Count > maxCollisions then raise NotUniform
        // split [lo, hi) at the colliding indices
        let bounds = [ int lo - 1 ] @ Set.toList cuts @ [ int hi ]

        bounds
        |> List.pairwise
        |> List.choose (fun (a, b) -> if b > a + 1 then Some(a + 1, b) else None)
        |> function
            | [] -> None
            | rs -> Some rs

/// The loop of one vector equation, or None when it is not uniform in its index.
let private equationLoop (m: CheckedModel) (eq: CEquation) (v: string) : LoopIr option =
    let st = List.item eq.State m.States
    let brownians = List.toArray m.Brownians
    let interior = Interior st.Size
    let leaves = templateLeaves m v interior
    let lower e = lowerWith leaves m Map.empty e

    try
        let drift = lower eq.Drift
        // the diffusion of the row lane by lane, in first-occurrence order, summed as
        // `lowerModelExcept` and `diffusionApplied` sum it
        let lanes = List<Sym>()
        let coeffs = Dictionary<Sym, Sym>(HashIdentity.Structural)

        for term in eq.Noise do
            let br = brownians[term.Brownian]

            let lane =
                match affine Map.empty v term.Index with
                | 0L, b when b >= 0L && b < int64 br.Size -> noise (br.Offset + int b)
                | 1L, b when abs b <= int64 br.Size ->
                    interior.Within(b, br.Size)
                    noiseAt (br.Offset + int b)
                | _ -> raise NotUniform

            let c = lower term.Coeff

            match coeffs.TryGetValue lane with
            | true, prev -> coeffs[lane] <- add prev c
            | _ ->
                coeffs[lane] <- c
                lanes.Add lane

        let gw =
            lanes |> Seq.fold (fun acc l -> if isZero coeffs[l] then acc else add acc (mul coeffs[l] l)) zero

        let step = eulerStep (stateAt st.Offset) drift gw

        // a lane dW[i + k] that is a literal lane dW[c] at i = c - k: the unrolled lowering sums
        // their coefficients into one entry there
        let laneCuts =
            [ for a in lanes do
                  for b in lanes do
                      match unify a b with
                      | At i -> i
                      | _ -> () ]

        rangesOf interior st.Size [ step; drift; gw ] laneCuts
        |> Option.map (fun rs -> { Target = st.Offset; Ranges = rs; Drift = drift; Gw = gw })
    with
    | NotUniform
    | :? OverflowException -> None

let rec private mentionsRelative (e: Sym) =
    match e.Op with
    | StateAt _ | NoiseAt _ | ExtAt _ -> true
    | _ -> List.exists mentionsRelative e.Args

/// The loop of one vector init and the law it gives every component, or None.
let private initLoop (m: CheckedModel) (ini: CInit) : (InitLoopIr * InitIr) option =
    let st = List.item ini.State m.States
    // an init without index variable gives every component the same value
    let v = defaultArg ini.Index ""
    let interior = Interior st.Size
    let lower e = lowerWith (templateLeaves m v interior) m Map.empty e

    try
        let law =
            match ini.Kind with
            | Deterministic e -> InitDet(lower e)
            | Normal (a, b) -> InitNormal(lower a, lower b)
            | Uniform (a, b) -> InitUniform(lower a, lower b)

        let parts =
            match law with
            | InitDet e -> [ e ]
            | InitNormal (a, b)
            | InitUniform (a, b) -> [ a; b ]

        // the law must be the same for every component (one law object then serves them all)
        if parts |> List.exists (fun e -> stateDeps e |> Array.isEmpty |> not || mentionsRelative e) then
            None
        else
            let value = initValue law (extAt "zn" st.Offset) (extAt "zu" st.Offset)

            rangesOf interior st.Size [ value ] []
            |> Option.map (fun rs -> { Target = st.Offset; Ranges = rs; Value = value }, law)
    with
    | NotUniform
    | :? OverflowException -> None

/// Lower a model with the vector equations and inits over at least `minSize` components as loops
/// where they are uniform in their index, everything else unrolled (`Lower.lowerModel`).
let lowerModel (minSize: int) (m: CheckedModel) : ModelIr =
    let states = List.toArray m.States
    let big (s: int) = states[s].Size >= minSize && states[s].IsVector
    let initCounts = m.Inits |> List.countBy (fun i -> i.State) |> dict
    let initsOf s = match initCounts.TryGetValue s with | true, n -> n | _ -> 0

    // a Stratonovich model's rows are unrolled: the Itô correction of row i reads the diffusion of
    // every row its noise depends on, which `Lower.itoDrift` builds per component
    let loops =
        [ for eq in (match m.Calculus with Ito -> m.Equations | Stratonovich -> []) do
              match eq.Index with
              | Some v when big eq.State -> yield! Option.toList (equationLoop m eq v)
              | _ -> () ]

    let initLoops =
        [ for ini in m.Inits do
              // a state with several init statements keeps the unrolled order of overwriting
              if big ini.State && initsOf ini.State = 1 then
                  yield! Option.toList (initLoop m ini)
          // a state without init starts at 0 (`InitDet zero`, which the unrolled lowering leaves)
          for s, st in Array.indexed states do
              if big s && initsOf s = 0 then
                  { Target = st.Offset; Ranges = [ 0, st.Size ]; Value = zero }, InitDet zero ]

    if loops.IsEmpty && initLoops.IsEmpty then
        Lower.lowerModel m
    else
        let rows = coveredBy m.Dim (loops |> Seq.map (fun l -> l.Target, l.Ranges))
        let inits = coveredBy m.Dim (initLoops |> Seq.map (fun (l, _) -> l.Target, l.Ranges))
        let ir = lowerModelExcept (fun k -> rows[k]) (fun k -> inits[k]) m

        for l, law in initLoops do
            for lo, hi in l.Ranges do
                for i in lo .. hi - 1 do
                    ir.Init[l.Target + i] <- law

        { ir with
            Loops = loops
            InitLoops = List.map fst initLoops }

/// Lower an observable (for a file without derivative queries) with each reduction over at least
/// `minSize` terms whose body is uniform in its index as one `SumLoop` (the observable is then built
/// and emitted in time independent of the number of terms), everything else as `Lower.observable`.
/// A reduction qualifies only where the unrolled sum is exactly the template's terms in order: no
/// term wraps round a periodic state or meets a fixed reference (no peeling here), and the term is
/// neither a sum nor a constant (which the unrolled sum would flatten or fold).
let observable (minSize: int) (m: CheckedModel) (e: CExpr) : Sym =
    let reduction (v: string) (n: int) (body: CExpr) : Sym option =
        if n < minSize || not (closedIn (Set.singleton v) body) then
            None
        else
            let interior = Interior n

            try
                let t = lowerWith (templateLeaves m v interior) m Map.empty body
                let full = interior.Lo <= 0L && interior.Hi >= int64 n
                let flat = match t.Op with Add | Num _ -> false | _ -> true

                if full && flat && (collisions n [ t ]).IsEmpty then Some t else None
            with
            | NotUniform
            | :? OverflowException -> None

    let leaves =
        { StateRef = fun env s ix -> state (componentOf m env s ix)
          IndexValue = fun env ix -> num (float (evalIndex env ix))
          Closed = Dictionary<CExpr, Sym>(HashIdentity.Reference)
          Reduction = reduction }

    lowerWith leaves m Map.empty e
