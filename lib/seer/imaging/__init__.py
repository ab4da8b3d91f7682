"""Images as the core sees them: volumes read onto one grid and cached (`volume`), SEER's 8 axial slice views
(`views`), and the objective evidence they give at request time: modality, head or body, field of view
(`evidence`). Imports only the shared base.
"""
