"""The Gradio Space, one module per job; app.py is its entry point.

- loading: which model is served (--model, $MODEL_ID, the pushed space_config.json, the bundled demo) and how
- uploads: an uploaded file read and decoded once, refusals worded for the visitor
- api: the documented API (/predict, /predict_batch) and its typed JSON
- headline: what the page says about the model, from its evaluation's results.json
- verdict_text: the verdict, the stability line and the threshold as the page shows them
- single_tab, batch_tab: one function per tab; batch_export: the batch table and its CSV
- feedback: "This verdict is wrong" stored as an imagefolder
- page: the whole page (header, tabs, API, queue)
"""
