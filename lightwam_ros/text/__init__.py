"""Instruction -> umT5 text context, exactly as Light-WAM was trained (docs/model.md, "Text contexts (umT5)").

One job per module, imported from the module itself (nothing is re-exported here, so importing one
part never loads the others): prompts (template, cleaning, context key), contexts (a bundle's
precomputed contexts and the cache directory), encode (`lightwam encode-text`), online (umT5 on the
robot for unknown instructions), umt5 (the encoder itself).
"""
