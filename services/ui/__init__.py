"""The Streamlit control room: it talks only to the gateway's REST API."""
