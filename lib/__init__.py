"""The FER series' shared package, in layers; a layer imports only the layers below it.

Data flows one way: manifest -> split -> decoded tensors -> fit (store) -> probabilities ->
evaluation -> result rows -> findings -> summary.

    config, atomic, progress   settings and profiles, atomic writes, progress bars: read by
                               every layer, import nothing of lib but each other
    data/        dataset adapters and manifests (__init__), readers, audit, splits, decoded
                 tensors, faces (crop/align), labels (class maps, sentiment scales), bench
    models/      the registry (__init__), the from-scratch CNNs (cnns), DDAMFN, pretrained
                 weights, classical baselines (HOG, kNN)
    evaluation/  metrics and paired tests, inference (probabilities), Grad-CAM, result rows
    training/    the fit loop, losses, augmentation, optimisers, runs over seeds,
                 named training subsets, the fit store, the compute plan
    analysis/    experiments built on stored fits: the seed studies' arms, domain shift,
                 ensembles, the outside `fer` peer
    reporting/   figures, findings written from result rows, EDA tables, the README summary
    run, predict, release, export, demo, bench, plan
                 command lines on top: the papermill runner, inference on images, the
                 released model, ONNX export, the demo, throughput benchmarks, the plan
"""
